package array

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/raid/disktest"
	"opensan/raid/layout"
	"opensan/raid/md"
)

type geometry struct {
	level, n int
}

var geometries = []geometry{
	{md.LevelRAID0, 1}, {md.LevelRAID0, 3}, {md.LevelRAID1, 2}, {md.LevelRAID1, 3},
	{md.LevelRAID10, 2}, {md.LevelRAID10, 3}, {md.LevelRAID10, 4},
	{md.LevelRAID5, 2}, {md.LevelRAID5, 3}, {md.LevelRAID5, 5},
	{md.LevelRAID6, 4}, {md.LevelRAID6, 5}, {md.LevelRAID6, 7},
}

const testChunk = 16 << 10

func memDevs(n int, size int64, bs int) []block.Device {
	out := make([]block.Device, n)
	for i := range out {
		out[i] = block.NewMemory(size, bs)
	}
	return out
}

func fixedClock() time.Time { return time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC) }

func create(t testing.TB, devs []block.Device, level int) *Array {
	t.Helper()
	a, err := Create(devs, CreateConfig{Level: level, Chunk: testChunk, Name: "test:a", Now: fixedClock, DataOffset: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	a.WaitSync()
	return a
}

// model is the reference: a plain byte slice the size of the array.
type model []byte

// randomIO does one random aligned write (or read, checked against the model).
func randomIO(t *testing.T, r *rand.Rand, a *Array, m model, maxLen int64) {
	t.Helper()
	bs := int64(a.LogicalBlockSize())
	size := a.Size()
	n := (1 + r.Int64N(maxLen/bs)) * bs
	n = min(n, size)
	off := r.Int64N((size-n)/bs+1) * bs
	if r.IntN(3) > 0 {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		var err error
		if r.IntN(8) == 0 {
			_, err = a.WriteAtFUA(p, off)
		} else {
			_, err = a.WriteAt(p, off)
		}
		if err != nil {
			t.Fatalf("write %d at %d: %v", n, off, err)
		}
		copy(m[off:], p)
		return
	}
	p := make([]byte, n)
	if _, err := a.ReadAt(p, off); err != nil {
		t.Fatalf("read %d at %d: %v", n, off, err)
	}
	if !bytes.Equal(p, m[off:off+n]) {
		t.Fatalf("read %d at %d differs from the model", n, off)
	}
}

func verifyAll(t *testing.T, a *Array, m model) {
	t.Helper()
	p := make([]byte, a.Size())
	if _, err := a.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, m) {
		i := 0
		for p[i] == m[i] {
			i++
		}
		t.Fatalf("array differs from the model from byte %d", i)
	}
}

func TestRandomWorkload(t *testing.T) {
	for _, g := range geometries {
		for _, bs := range []int{512, 4096} {
			t.Run(fmt.Sprintf("raid%d-%d-bs%d", g.level, g.n, bs), func(t *testing.T) {
				t.Parallel()
				devs := memDevs(g.n, 64<<10+40*testChunk+8192, bs)
				a := create(t, devs, g.level)
				if !a.InSync() {
					t.Fatal("not in sync after WaitSync")
				}
				m := make(model, a.Size())
				r := rand.New(rand.NewPCG(uint64(g.level), uint64(g.n*bs)))
				for range 200 {
					randomIO(t, r, a, m, 3*testChunk)
				}
				verifyAll(t, a, m)
				if bad, err := a.Check(); err != nil || bad != 0 {
					t.Fatalf("check: %d mismatches, %v", bad, err)
				}
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				b, err := Assemble(devs, AssembleConfig{Now: fixedClock})
				if err != nil {
					t.Fatal(err)
				}
				if !b.InSync() || b.Degraded() != 0 {
					t.Fatalf("reassembled clean array: in sync %v, degraded %d", b.InSync(), b.Degraded())
				}
				verifyAll(t, b, m)
				b.Close()
			})
		}
	}
}

func TestArraySizes(t *testing.T) {
	// Members of 64 KiB data offset + 10 chunks + a partial chunk: each contributes 10 chunks.
	for _, tc := range []struct {
		g      geometry
		chunks int64
	}{
		{geometry{md.LevelRAID0, 3}, 30}, {geometry{md.LevelRAID1, 2}, 10 * testChunk / (64 << 10)},
		{geometry{md.LevelRAID10, 3}, 15}, {geometry{md.LevelRAID5, 4}, 30}, {geometry{md.LevelRAID6, 5}, 30},
	} {
		a := create(t, memDevs(tc.g.n, 64<<10+10*testChunk+4096, 512), tc.g.level)
		want := tc.chunks * testChunk
		if tc.g.level == md.LevelRAID1 {
			want = tc.chunks * (64 << 10)
		}
		if a.Size() != want {
			t.Errorf("raid%d x%d: size %d, want %d", tc.g.level, tc.g.n, a.Size(), want)
		}
		a.Close()
	}
}

// TestPlacement writes each array chunk with its own number and reads the members directly at the
// places md's layouts put them, parity included.
func TestPlacement(t *testing.T) {
	for _, g := range []geometry{{md.LevelRAID0, 3}, {md.LevelRAID10, 3}, {md.LevelRAID5, 4}, {md.LevelRAID6, 5}} {
		devs := memDevs(g.n, 64<<10+12*testChunk, 512)
		a := create(t, devs, g.level)
		chunks := a.Size() / testChunk
		for c := range chunks {
			if _, err := a.WriteAt(bytes.Repeat([]byte{byte(c + 1)}, testChunk), c*testChunk); err != nil {
				t.Fatal(err)
			}
		}
		at := func(m int, row int64) byte {
			b := make([]byte, 1)
			devs[m].ReadAt(b, 64<<10+row*testChunk+testChunk-1)
			return b[0]
		}
		for c := range chunks {
			want := byte(c + 1)
			switch g.level {
			case md.LevelRAID0:
				m, row := layout.RAID0(c, g.n)
				if at(m, row) != want {
					t.Fatalf("raid0 chunk %d not on member %d row %d", c, m, row)
				}
			case md.LevelRAID10:
				for j := range 2 {
					m, row := layout.RAID10Near2(c, g.n, j)
					if at(m, row) != want {
						t.Fatalf("raid10 chunk %d copy %d not on member %d row %d", c, j, m, row)
					}
				}
			case md.LevelRAID5:
				s, k := layout.Stripe(c, g.n-1)
				_, m := layout.RAID5(s, g.n, k)
				if at(m, s) != want {
					t.Fatalf("raid5 chunk %d not on member %d", c, m)
				}
				if k == 0 { // P of a stripe of bytes s*3+1, s*3+2, s*3+3
					p := layout.RAID5Parity(s, g.n)
					if at(p, s) != byte(3*s+1)^byte(3*s+2)^byte(3*s+3) {
						t.Fatalf("raid5 stripe %d parity wrong on member %d", s, p)
					}
				}
			case md.LevelRAID6:
				s, k := layout.Stripe(c, g.n-2)
				p, q, m := layout.RAID6(s, g.n, k)
				if at(m, s) != want {
					t.Fatalf("raid6 chunk %d not on member %d", c, m)
				}
				if k == 0 {
					d := []byte{byte(3*s + 1), byte(3*s + 2), byte(3*s + 3)}
					var wq byte // Horner: q = q*2 ^ D_k from the highest k
					for i := 2; i >= 0; i-- {
						wq = gfMul2(wq) ^ d[i]
					}
					if at(p, s) != d[0]^d[1]^d[2] || at(q, s) != wq {
						t.Fatalf("raid6 stripe %d: P %#x Q %#x, want %#x %#x", s, at(p, s), at(q, s), d[0]^d[1]^d[2], wq)
					}
				}
			}
		}
		a.Close()
	}
}

func gfMul2(b byte) byte {
	if b&0x80 != 0 {
		return b<<1 ^ 0x1d
	}
	return b << 1
}

// TestFaults runs random workloads while members fail at random points (I/O errors on a random operation
// and range, or disappearance). Data must stay equal to the model while redundancy remains; the
// survivors' superblocks must say which member failed.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		g     geometry
		fails int
	}{
		{geometry{md.LevelRAID1, 2}, 1}, {geometry{md.LevelRAID1, 3}, 2}, {geometry{md.LevelRAID10, 4}, 1},
		{geometry{md.LevelRAID10, 3}, 1}, {geometry{md.LevelRAID5, 3}, 1}, {geometry{md.LevelRAID5, 5}, 1},
		{geometry{md.LevelRAID6, 4}, 2}, {geometry{md.LevelRAID6, 6}, 2},
	} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("raid%d-%d-seed%d", tc.g.level, tc.g.n, seed), func(t *testing.T) {
				t.Parallel()
				r := rand.New(rand.NewPCG(seed, uint64(tc.g.level*10+tc.g.n)))
				mems := memDevs(tc.g.n, 64<<10+24*testChunk, 512)
				faulty := make([]*disktest.Faulty, tc.g.n)
				devs := make([]block.Device, tc.g.n)
				for i := range devs {
					faulty[i] = disktest.NewFaulty(mems[i], fmt.Sprintf("d%d", i))
					devs[i] = faulty[i]
				}
				a := create(t, devs, tc.g.level)
				m := make(model, a.Size())
				victims := r.Perm(tc.g.n)[:tc.fails]
				for _, v := range victims {
					f := disktest.Fault{Op: disktest.OpAny, Skip: r.IntN(200)}
					switch r.IntN(3) {
					case 0:
						f.Vanish = true
					case 1:
						f.Op = disktest.OpWrite
						f.From = 64<<10 + r.Int64N(20)*testChunk
						f.To = f.From + testChunk
					default:
						f.Op = disktest.OpRead | disktest.OpWrite
					}
					faulty[v].Inject(f)
				}
				for range 250 {
					randomIO(t, r, a, m, 2*testChunk)
				}
				// Make sure every victim has failed by now: make them vanish and touch everything.
				for _, v := range victims {
					faulty[v].Vanish()
				}
				for range 50 {
					randomIO(t, r, a, m, 4*testChunk)
				}
				if _, err := a.WriteAt(m[:testChunk], 0); err != nil {
					t.Fatal(err)
				}
				if err := a.Flush(); err != nil {
					t.Fatal(err)
				}
				verifyAll(t, a, m)
				if a.Degraded() != tc.fails {
					t.Fatalf("degraded %d, want %d", a.Degraded(), tc.fails)
				}
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				// Survivors record the failures; reassembling from everything leaves the victims out.
				for i := range faulty {
					faulty[i].Heal()
				}
				b, err := Assemble(devs, AssembleConfig{Now: fixedClock})
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range victims {
					if !b.Faulty(v) {
						t.Fatalf("failed member %d taken back", v)
					}
				}
				sb, err := Examine(devs[firstGood(b)])
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range victims {
					if sb.Super.DevRoles[v] != md.RoleFaulty {
						t.Fatalf("survivor's dev_roles[%d] = %#x, want faulty", v, sb.Super.DevRoles[v])
					}
				}
				verifyAll(t, b, m)
				b.Close()
			})
		}
	}
}

func firstGood(a *Array) int {
	for i := range a.n {
		if !a.Faulty(i) {
			return i
		}
	}
	return -1
}

func TestTooManyFailures(t *testing.T) {
	mems := memDevs(4, 64<<10+8*testChunk, 512)
	devs := make([]block.Device, 4)
	fs := make([]*disktest.Faulty, 4)
	for i := range devs {
		fs[i] = disktest.NewFaulty(mems[i], fmt.Sprint(i))
		devs[i] = fs[i]
	}
	a := create(t, devs, md.LevelRAID5)
	fs[0].Vanish()
	fs[2].Vanish()
	_, err := a.WriteAt(make([]byte, 4*testChunk), 0)
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("raid5 with two members gone: %v", err)
	}
	if _, err := a.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrFailed) {
		t.Fatalf("read of a failed array: %v", err)
	}
}

func TestAssembleStaleAndSets(t *testing.T) {
	devs := memDevs(3, 64<<10+8*testChunk, 512)
	a := create(t, devs, md.LevelRAID5)
	a.Close()
	stale := block.NewMemory(devs[1].Size(), 512)
	copyDev(stale, devs[1])
	// Degrade: assemble without member 1, write, stop.
	b, err := Assemble([]block.Device{devs[0], devs[2]}, AssembleConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{9}, int(b.Size()))
	b.WriteAt(want, 0)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Member 1's old copy comes back: it is stale and must be left out.
	c, err := Assemble([]block.Device{devs[0], stale, devs[2]}, AssembleConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Faulty(1) || c.Degraded() != 1 {
		t.Fatalf("stale member taken in: degraded %d", c.Degraded())
	}
	got := make([]byte, c.Size())
	c.ReadAt(got, 0)
	if !bytes.Equal(got, want) {
		t.Fatal("degraded data wrong")
	}
	c.Close()
	// Two sets at once are refused.
	other := memDevs(2, 64<<10+8*testChunk, 512)
	create(t, other, md.LevelRAID1).Close()
	if _, err := Assemble([]block.Device{devs[0], other[0]}, AssembleConfig{}); !errors.Is(err, ErrSeveralSets) {
		t.Fatalf("two sets: %v", err)
	}
	// Blank disks are not members.
	if _, err := Assemble(memDevs(2, 1<<20, 512), AssembleConfig{}); !errors.Is(err, ErrNoMembers) {
		t.Fatalf("blank disks: %v", err)
	}
}

func copyDev(dst, src block.Device) {
	buf := make([]byte, src.Size())
	src.ReadAt(buf, 0)
	dst.WriteAt(buf, 0)
}

// TestRefuseUnsupported: a member whose superblock carries a journal (or a reshape) is refused with md's
// field error, not misread.
func TestRefuseUnsupported(t *testing.T) {
	devs := memDevs(3, 64<<10+8*testChunk, 512)
	create(t, devs, md.LevelRAID5).Close()
	buf := make([]byte, 512)
	devs[0].ReadAt(buf, 4096)
	buf[9] |= md.FeatureJournal >> 8
	sb := buf[:256+2*md.DefaultMaxDev]
	sb[0xd8], sb[0xd9], sb[0xda], sb[0xdb] = 0, 0, 0, 0
	c := md.Checksum(sb)
	sb[0xd8], sb[0xd9], sb[0xda], sb[0xdb] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	devs[0].WriteAt(buf, 4096)
	_, err := Assemble(devs, AssembleConfig{})
	var fe *md.FieldError
	if !errors.As(err, &fe) || fe.Field != "feature_map" || !errors.Is(err, md.ErrUnsupported) {
		t.Fatalf("journal member: %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		cfg  CreateConfig
	}{
		{"raid6 of 3", 3, CreateConfig{Level: md.LevelRAID6}},
		{"raid4", 3, CreateConfig{Level: md.LevelRAID4}},
		{"linear", 2, CreateConfig{Level: md.LevelLinear}},
		{"chunk 3000", 3, CreateConfig{Level: md.LevelRAID5, Chunk: 3000}},
		{"raid0 bitmap", 2, CreateConfig{Level: md.LevelRAID0, Bitmap: true}},
		{"bitmap chunk 1000", 2, CreateConfig{Level: md.LevelRAID1, Bitmap: true, BitmapChunk: 1000}},
		{"long name", 2, CreateConfig{Level: md.LevelRAID1, Name: "a-very-long-host-name:and-a-long-array-name"}},
		{"no members", 0, CreateConfig{Level: md.LevelRAID1}},
	} {
		if _, err := Create(memDevs(tc.n, 4<<20, 512), tc.cfg); err == nil {
			t.Errorf("%s: created", tc.name)
		}
	}
}

// TestRAID0UnequalMembers: on members of different sizes, every superblock claims the same data_size
// (so Linux's raid0 sees one zone, our layout); a foreign raid0 with unequal data_size is refused.
func TestRAID0UnequalMembers(t *testing.T) {
	devs := []block.Device{block.NewMemory(64<<10+8*testChunk, 512), block.NewMemory(64<<10+12*testChunk, 512)}
	a := create(t, devs, md.LevelRAID0)
	if a.Size() != 16*testChunk {
		t.Fatalf("size %d", a.Size())
	}
	a.Close()
	for i, d := range devs {
		f, err := Examine(d)
		if err != nil {
			t.Fatal(err)
		}
		if f.Super.DataSize != 8*testChunk/512 || f.Super.Size != f.Super.DataSize {
			t.Fatalf("member %d: data_size %d size %d", i, f.Super.DataSize, f.Super.Size)
		}
	}
	// Make member 1 claim its whole space, as mdadm does on unequal disks.
	buf := make([]byte, 512)
	devs[1].ReadAt(buf, 4096)
	sb, _ := md.Decode(buf)
	sb.DataSize = 12 * testChunk / 512
	out, _ := md.Encode(sb, 512)
	devs[1].WriteAt(out, 4096)
	if _, err := Assemble(devs, AssembleConfig{}); !errors.Is(err, md.ErrUnsupported) {
		t.Fatalf("multi-zone raid0: %v", err)
	}
}

func TestDiscard(t *testing.T) {
	for _, g := range []geometry{{md.LevelRAID5, 3}, {md.LevelRAID6, 4}, {md.LevelRAID10, 3}} {
		a := create(t, memDevs(g.n, 64<<10+8*testChunk, 512), g.level)
		m := make(model, a.Size())
		for i := range m {
			m[i] = byte(i)
		}
		a.WriteAt(m, 0)
		if err := a.Discard(testChunk+512, 2*testChunk); err != nil {
			t.Fatal(err)
		}
		clear(m[testChunk+512 : 3*testChunk+512])
		verifyAll(t, a, m)
		if bad, err := a.Check(); err != nil || bad != 0 {
			t.Fatalf("raid%d: %d mismatches after discard, %v", g.level, bad, err)
		}
		if err := a.Discard(a.Size()-512, 1024); err == nil {
			t.Fatal("discard past the end accepted")
		}
		a.Close()
	}
}
