package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// A NATS server that requires client certificates: the operator connects
// with the CA and certificate of source.tls.secretRef, as its workers will,
// and says what is wrong when the Secret lacks them.
func TestSinkConnectsToNATSOverTLS(t *testing.T) {
	srv := natstest.StartTLS(t, natstest.TLSOptions{VerifyClients: true})
	srv.CreateStream(t, "EVENTS", "events.>")
	_, js := srv.JetStream(t)

	ns := namespace(t)
	pki := srv.PKI
	mustCreate(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nats-tls", Namespace: ns},
		Data: map[string][]byte{"ca.crt": pki.CAPEM, "tls.crt": pki.ClientCertPEM, "tls.key": pki.ClientKeyPEM}})
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Source.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "nats-tls"}}
	mustCreate(t, sink)
	eventually(t, 20*time.Second, func() error {
		_, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
		return err
	})

	// The same server, a Secret with the CA only: the server refuses the
	// connection without a client certificate, and the sink says why.
	ns2 := namespace(t)
	mustCreate(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nats-tls", Namespace: ns2},
		Data: map[string][]byte{"ca.crt": pki.CAPEM}})
	sink2 := newSink(ns2, srv.ClientURL())
	sink2.Spec.Source.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "nats-tls"}}
	mustCreate(t, sink2)
	// The server answered and refused: only the Secret can fix that, so
	// the sink is Stalled (kstatus Failed), not retrying as if NATS were
	// away.
	c := wantCondition(t, ns2, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonNATSAuthFailed)
	t.Logf("without a client certificate: %s", c.Message)
	if _, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns2)); err == nil {
		t.Error("a consumer was made for the sink that cannot connect")
	}
}

// An S3 endpoint with a private CA: the operator's access check trusts
// destination.tls.secretRef's ca.crt, and without it names the certificate.
func TestS3CheckTrustsTheSinksCA(t *testing.T) {
	s3, caPEM := s3test.StartTLS(t)
	s3.CreateBucket(t, "lake")
	for _, tc := range []struct {
		name    string
		withCA  bool
		wantMsg string
	}{{"with the CA", true, ""}, {"without it", false, "certificate"}} {
		t.Run(tc.name, func(t *testing.T) {
			ns, srv := withStream(t)
			sink := newSink(ns, srv.ClientURL())
			mustCreate(t, withS3(t, sink, s3, s3Keys))
			if tc.withCA {
				mustCreate(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-ca", Namespace: ns},
					Data: map[string][]byte{"ca.crt": caPEM}})
				sink.Spec.Destination.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "s3-ca"}}
			}
			mustCreate(t, sink)
			if tc.withCA {
				markRolledOut(t, ns, "events")
				wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
				return
			}
			eventually(t, 20*time.Second, func() error {
				got, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
				if err != nil {
					return err
				}
				for _, c := range got.Status.Conditions {
					if c.Type == jetsinkv1.ConditionReady && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, tc.wantMsg) {
						t.Logf("%s: %s", c.Reason, c.Message)
						return nil
					}
				}
				return fmt.Errorf("conditions %+v do not name the certificate", got.Status.Conditions)
			})
		})
	}
}
