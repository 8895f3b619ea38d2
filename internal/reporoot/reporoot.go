// Package reporoot finds the root of the jetsink checkout (the directory
// holding go.mod), where bin/ keeps the tool binaries that tests, the demo
// and the benchmarks run. Only development tooling and tests import it.
package reporoot

import (
	"errors"
	"os"
	"path/filepath"
)

// Find walks up from the working directory to the directory holding go.mod.
func Find() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from inside the jetsink checkout")
		}
		dir = parent
	}
}
