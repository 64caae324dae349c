//go:build isal

package isal

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"opensan/raid/parity"
)

func aligned(n int) []byte {
	b := make([]byte, n+Align)
	off := (Align - int(uintptr(unsafe.Pointer(&b[0]))%Align)) % Align
	return b[off : off+n]
}

// ISA-L's pq_gen computes md's P and Q: the bench compares raid/parity with it byte for byte, so pin that
// they agree here too.
func TestMatchesParity(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 3, 8, 16} {
		for _, size := range []int{32, 4096, 65536 + 64} {
			data := make([][]byte, n)
			for i := range data {
				data[i] = aligned(size)
				for j := range data[i] {
					data[i][j] = byte(r.Uint32())
				}
			}
			p, q := aligned(size), aligned(size)
			if err := PQGen(data, p, q, 2); err != nil {
				t.Fatal(err)
			}
			x := aligned(size)
			if err := XorGen(data, x, 1); err != nil {
				t.Fatal(err)
			}
			c, err := parity.NewPQ(n)
			if err != nil {
				t.Fatal(err)
			}
			shards := append(append([][]byte{}, data...), make([]byte, size), make([]byte, size))
			if err := c.Encode(shards); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, shards[n]) || !bytes.Equal(q, shards[n+1]) || !bytes.Equal(x, shards[n]) {
				t.Fatalf("%d members of %d bytes: ISA-L and raid/parity disagree", n, size)
			}
		}
	}
}

func TestRejects(t *testing.T) {
	a, b := aligned(64), aligned(64)
	if err := XorGen([][]byte{a}, b[:48], 1); err == nil {
		t.Error("unequal lengths accepted")
	}
	if err := XorGen([][]byte{a[:33]}, b[:33], 1); err == nil {
		t.Error("length not a multiple of 32 accepted")
	}
	m := aligned(128)[1:65]
	if err := XorGen([][]byte{m}, b, 1); err == nil {
		t.Error("misaligned vector accepted")
	}
}
