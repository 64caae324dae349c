package parity

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// refMul2 and refPQ are the plain reference: md's lib/raid6 int.uc algorithm, a byte at a time.
func refMul2(b byte) byte {
	r := b << 1
	if b&0x80 != 0 {
		r ^= 0x1d
	}
	return r
}

func refPQ(data [][]byte) (p, q []byte) {
	n := len(data[0])
	p, q = make([]byte, n), make([]byte, n)
	for i := range n {
		var pp, qq byte
		for k := len(data) - 1; k >= 0; k-- { // Horner from the highest k: q = q*2 ^ D_k
			pp ^= data[k][i]
			qq = refMul2(qq) ^ data[k][i]
		}
		p[i], q[i] = pp, qq
	}
	return p, q
}

func randShards(r *rand.Rand, data, parity, size int) [][]byte {
	s := make([][]byte, data+parity)
	for i := range s {
		s[i] = make([]byte, size)
		if i < data {
			for j := range s[i] {
				s[i][j] = byte(r.Uint32())
			}
		}
	}
	return s
}

var sizes = []int{1, 2, 3, 7, 15, 16, 17, 31, 63, 64, 65, 127, 511, 512, 4096, 4097, 65536 + 13}

func TestPQMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, data := range []int{1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, MaxData} {
		pq, err := NewPQ(data)
		if err != nil {
			t.Fatal(err)
		}
		p5, err := NewP(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range sizes {
			if data > 64 && size > 4097 {
				continue
			}
			s := randShards(r, data, 2, size)
			if err := pq.Encode(s); err != nil {
				t.Fatal(err)
			}
			wp, wq := refPQ(s[:data])
			if !bytes.Equal(s[data], wp) || !bytes.Equal(s[data+1], wq) {
				t.Fatalf("data %d size %d: P/Q differ from reference", data, size)
			}
			s5 := append(append([][]byte{}, s[:data]...), make([]byte, size))
			if err := p5.Encode(s5); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s5[data], wp) {
				t.Fatalf("data %d size %d: RAID5 P differs from XOR", data, size)
			}
		}
	}
}

// TestKnownQ pins one byte by hand: D0=1, D1=1, D2=1 gives P=1, Q = 1 ^ 2 ^ 4 = 7; D2=0x80 gives
// Q = 1 ^ 2 ^ (0x80*4 mod 0x11d) = 1 ^ 2 ^ 0x3a = 0x39.
func TestKnownQ(t *testing.T) {
	c, _ := NewPQ(3)
	s := [][]byte{{1}, {1}, {1}, {0}, {0}}
	if err := c.Encode(s); err != nil {
		t.Fatal(err)
	}
	if s[3][0] != 1 || s[4][0] != 7 {
		t.Fatalf("P %#x Q %#x, want 1 and 7", s[3][0], s[4][0])
	}
	s = [][]byte{{1}, {1}, {0x80}, {0}, {0}}
	c.Encode(s)
	if s[3][0] != 0x80 || s[4][0] != 0x39 {
		t.Fatalf("P %#x Q %#x, want 0x80 and 0x39", s[3][0], s[4][0])
	}
}

func TestReconstruct(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, data := range []int{1, 2, 3, 4, 6, 8, 11} {
		for _, parity := range []int{1, 2} {
			c, _ := newCoder(data, parity)
			for _, size := range []int{1, 5, 64, 513, 8192} {
				s := randShards(r, data, parity, size)
				if err := c.Encode(s); err != nil {
					t.Fatal(err)
				}
				n := data + parity
				for a := range n {
					for b := a; b < n; b++ {
						if parity == 1 && b != a {
							continue
						}
						cp := make([][]byte, n)
						for i := range s {
							cp[i] = bytes.Clone(s[i])
						}
						cp[a] = cp[a][:0]
						cp[b] = cp[b][:0]
						if err := c.Reconstruct(cp); err != nil {
							t.Fatalf("data %d parity %d lost %d,%d: %v", data, parity, a, b, err)
						}
						for i := range s {
							if !bytes.Equal(cp[i], s[i]) {
								t.Fatalf("data %d parity %d size %d lost %d,%d: shard %d wrong", data, parity, size, a, b, i)
							}
						}
					}
				}
				if ok, err := c.Verify(s); !ok || err != nil {
					t.Fatalf("verify: %v %v", ok, err)
				}
				s[0][0] ^= 1
				if ok, _ := c.Verify(s); ok {
					t.Fatal("verify accepted corrupted data")
				}
			}
		}
	}
	c, _ := NewPQ(3)
	s := randShards(r, 3, 2, 16)
	c.Encode(s)
	s[0], s[1], s[2] = nil, nil, nil
	if err := c.Reconstruct(s); err == nil {
		t.Fatal("rebuilt three lost members with two parity")
	}
}

func TestUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, data := range []int{1, 3, 8} {
		c, _ := NewPQ(data)
		for _, size := range []int{1, 33, 4096} {
			s := randShards(r, data, 2, size)
			c.Encode(s)
			for k := range data {
				nw := randShards(r, 1, 0, size)[0]
				if err := c.Update(k, bytes.Clone(s[k]), nw, s[data:]); err != nil {
					t.Fatal(err)
				}
				s[k] = nw
				wp, wq := refPQ(s[:data])
				if !bytes.Equal(s[data], wp) || !bytes.Equal(s[data+1], wq) {
					t.Fatalf("data %d size %d k %d: updated parity differs", data, size, k)
				}
			}
		}
	}
}

func TestErrors(t *testing.T) {
	if _, err := NewP(0); err == nil {
		t.Fatal("0 data members accepted")
	}
	if _, err := NewPQ(MaxData + 1); err == nil {
		t.Fatal("too many data members accepted")
	}
	c, _ := NewPQ(2)
	if err := c.Encode([][]byte{{1}, {1, 2}, {0}, {0}}); err == nil {
		t.Fatal("unequal shards accepted")
	}
}

func bench(b *testing.B, parity, size int) {
	const data = 8
	c, _ := newCoder(data, parity)
	s := randShards(rand.New(rand.NewPCG(7, 8)), data, parity, size)
	b.SetBytes(int64(data * size))
	b.ResetTimer()
	for b.Loop() {
		if err := c.Encode(s); err != nil {
			b.Fatal(err)
		}
	}
}

// Benchmarks: 8 data members of 64 KiB and 16 MiB; throughput counts data bytes, as ISA-L's figures do.
func BenchmarkParity(b *testing.B) {
	for _, size := range []int{64 << 10, 16 << 20} {
		b.Run(fmt.Sprintf("xor/8x%dKiB", size>>10), func(b *testing.B) { bench(b, 1, size) })
		b.Run(fmt.Sprintf("pq/8x%dKiB", size>>10), func(b *testing.B) { bench(b, 2, size) })
	}
}
