// Package parity computes md's RAID5 and RAID6 parity: P, the XOR of the data chunks of a stripe, and Q,
// the sum over GF(2^8) (polynomial 0x11d, generator 2) of g^k * D_k with k the data index within the stripe
// (md's raid6 syndrome, lib/raid6). It reconstructs any one (RAID5) or two (RAID6) lost members.
//
// The field arithmetic is github.com/klauspost/reedsolomon's (SIMD: AVX2, AVX-512, GFNI), driven by a custom
// parity matrix whose rows are md's: all ones for P, 1, 2, 4, 8, ... (g^k) for Q. parity_test.go pins the
// equivalence against a plain reference implementation.
//
// XOR (RAID5's P) runs through the same multiply kernel with every coefficient 1: per 64 bytes of each data
// member a GFNI affine transform and an XOR into a single accumulator, plus a per-call set-up of about half
// a microsecond. On 8 members of 64 KiB (in L2) that reaches about 0.8x ISA-L's plain xor_gen; from RAM
// (16 MiB members) both are bound by memory bandwidth (see BENCHMARKS.md). Measured alternatives without
// assembly of our own: github.com/templexxx/xorsimd (one AVX-512 pass over N sources) was slower here, and
// crypto/subtle.XORBytes (SSE2, one pass per member) about half as fast; Go's simd/archsimd (AVX-512
// loads and XORs in Go) matched ISA-L but needs GOEXPERIMENT=simd, so none replaced the kernel.
package parity

import (
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// MaxData is the most data members a stripe may have: md's raid6 Q needs distinct g^k for k < 255, and
// reedsolomon's GF(2^8) codes take at most 256 shards in all.
const MaxData = 253

// Coder computes and checks parity for stripes of a fixed number of data members. Shards passed to its
// methods are data 0..Data()-1 then P (and Q for RAID6), all of the same length. A Coder is safe for
// concurrent use.
type Coder struct {
	data, parity int
	enc          reedsolomon.Encoder
}

// ErrTooManyLost is returned when more members are missing than the parity can rebuild.
var ErrTooManyLost = errors.New("parity: more members lost than the parity can rebuild")

// NewP returns a RAID5 coder (P only) for data data members.
func NewP(data int) (*Coder, error) { return newCoder(data, 1) }

// NewPQ returns a RAID6 coder (P and Q) for data data members.
func NewPQ(data int) (*Coder, error) { return newCoder(data, 2) }

func newCoder(data, parity int) (*Coder, error) {
	if data < 1 || data > MaxData {
		return nil, fmt.Errorf("parity: %d data members, want 1 to %d", data, MaxData)
	}
	rows := make([][]byte, parity)
	rows[0] = make([]byte, data) // P: every coefficient 1
	for k := range rows[0] {
		rows[0][k] = 1
	}
	if parity == 2 {
		rows[1] = make([]byte, data) // Q: g^k, g = 2
		g := byte(1)
		for k := range rows[1] {
			rows[1][k] = g
			g = mul2(g)
		}
	}
	// One goroutine per call: the array runs many stripes in parallel, and one-core figures stay honest.
	enc, err := reedsolomon.New(data, parity, reedsolomon.WithCustomMatrix(rows), reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, fmt.Errorf("parity: %w", err)
	}
	return &Coder{data: data, parity: parity, enc: enc}, nil
}

// mul2 multiplies by the generator in GF(2^8) mod 0x11d; used only to build the Q row's constants.
func mul2(b byte) byte {
	if b&0x80 != 0 {
		return b<<1 ^ 0x1d
	}
	return b << 1
}

// Data is the number of data members; Parity is 1 (P) or 2 (P and Q).
func (c *Coder) Data() int   { return c.data }
func (c *Coder) Parity() int { return c.parity }

func (c *Coder) check(shards [][]byte, allowMissing bool) (int, error) {
	if len(shards) != c.data+c.parity {
		return 0, fmt.Errorf("parity: %d shards, want %d data + %d parity", len(shards), c.data, c.parity)
	}
	size := -1
	for i, s := range shards {
		if len(s) == 0 && allowMissing {
			continue
		}
		if size < 0 {
			size = len(s)
		}
		if len(s) != size || size == 0 {
			return 0, fmt.Errorf("parity: shard %d is %d bytes, want %d (all equal, non-empty)", i, len(s), size)
		}
	}
	return size, nil
}

// Encode computes the parity shards from the data shards.
func (c *Coder) Encode(shards [][]byte) error {
	if _, err := c.check(shards, false); err != nil {
		return err
	}
	return c.enc.Encode(shards)
}

// Verify reports whether the parity shards match the data shards.
func (c *Coder) Verify(shards [][]byte) (bool, error) {
	if _, err := c.check(shards, false); err != nil {
		return false, err
	}
	return c.enc.Verify(shards)
}

// Reconstruct rebuilds the shards that are empty (len 0): any one for RAID5, any two for RAID6, data or
// parity. A missing shard with enough capacity (cap >= the shard size) is rebuilt in place, without
// allocating.
func (c *Coder) Reconstruct(shards [][]byte) error {
	if _, err := c.check(shards, true); err != nil {
		return err
	}
	lost := 0
	for _, s := range shards {
		if len(s) == 0 {
			lost++
		}
	}
	if lost > c.parity {
		return fmt.Errorf("%w: %d lost, %d parity", ErrTooManyLost, lost, c.parity)
	}
	if lost == 0 {
		return nil
	}
	if err := c.enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("parity: %w", err)
	}
	return nil
}

// Update adjusts the parity shards for data shard k changing from old to new, without reading the other
// data shards: P ^= old ^ new, Q ^= g^k * (old ^ new). This is md's read-modify-write. parity holds P (and
// Q); old, new and the parity shards are of equal length. old is overwritten (with old ^ new): one pass
// over the parity with the difference costs half of taking old out and putting new in.
func (c *Coder) Update(k int, old, new []byte, parity [][]byte) error {
	if k < 0 || k >= c.data {
		return fmt.Errorf("parity: data index %d out of range [0,%d)", k, c.data)
	}
	if len(parity) != c.parity {
		return fmt.Errorf("parity: %d parity shards, want %d", len(parity), c.parity)
	}
	for i, p := range parity {
		if len(p) != len(old) || len(new) != len(old) {
			return fmt.Errorf("parity: update of %d bytes with parity shard %d of %d bytes and new data of %d", len(old), i, len(p), len(new))
		}
	}
	// Addition in GF(2^8) is XOR and multiplication distributes over it: adding g^k*(old^new) takes
	// old's contribution out and puts new's in.
	subtle.XORBytes(old, old, new)
	if err := c.enc.EncodeIdx(old, k, parity); err != nil {
		return fmt.Errorf("parity: %w", err)
	}
	return nil
}
