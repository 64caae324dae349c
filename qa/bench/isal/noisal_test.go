//go:build !isal

package isal

import (
	"errors"
	"testing"
)

func TestUnavailable(t *testing.T) {
	if Available {
		t.Fatal("Available without the isal tag")
	}
	if err := XorGen(nil, nil, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("XorGen = %v, want ErrUnavailable", err)
	}
	if err := PQGen(nil, nil, nil, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PQGen = %v, want ErrUnavailable", err)
	}
}
