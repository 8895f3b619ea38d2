//go:build goexperiment.jsonv2

package eventgen

import (
	jsonv2 "encoding/json/v2"
	"testing"
)

func BenchmarkDecodeJSONv2(b *testing.B) {
	in := bodies(4096)
	var env envelopeV1
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		env = envelopeV1{}
		if err := jsonv2.Unmarshal(in[i%len(in)], &env); err != nil {
			b.Fatal(err)
		}
	}
}
