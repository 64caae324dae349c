package array

import (
	"fmt"
	"testing"

	"opensan/gateway/block"
	"opensan/raid/md"
)

// Benchmarks on memory members (issue 10's goals: RAID5/6 full-stripe write and degraded read at 80% of
// (n-1)/n resp. (n-2)/n of the raw members' throughput). Bytes counted are array bytes.

const benchMember = 64<<20 + DefaultDataOffset

func BenchmarkRawMemory(b *testing.B) {
	d := block.NewMemory(benchMember, 512)
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	off := int64(0)
	for b.Loop() {
		d.WriteAt(p, off)
		off = (off + int64(len(p))) % (64 << 20)
	}
}

func benchArray(b *testing.B, level, n int, degraded, write bool) {
	a, err := Create(memDevs(n, benchMember, 512), CreateConfig{Level: level, Name: "bench", AssumeClean: true})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	stripe := int64(DefaultChunk) * int64(a.dataDisks)
	p := make([]byte, stripe)
	for off := int64(0); off+stripe <= a.Size(); off += stripe {
		a.WriteAt(p, off)
	}
	if degraded {
		a.meta.Lock()
		a.slot(0).faulty.Store(true)
		a.failedLocked(nil)
		a.meta.Unlock()
	}
	b.SetBytes(stripe)
	off := int64(0)
	b.ResetTimer()
	for b.Loop() {
		var err error
		if write {
			_, err = a.WriteAt(p, off)
		} else {
			_, err = a.ReadAt(p, off)
		}
		if err != nil {
			b.Fatal(err)
		}
		off += stripe
		if off+stripe > a.Size() {
			off = 0
		}
	}
}

// benchSmallWrites: 4 KiB writes at random aligned offsets (read-modify-write on parity levels).
func benchSmallWrites(b *testing.B, level, n int) {
	a, err := Create(memDevs(n, benchMember, 512), CreateConfig{Level: level, Name: "bench", AssumeClean: true})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	p := make([]byte, 4096)
	blocks := a.Size() / 4096
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		x := uint64(12345)
		for pb.Next() {
			x = x*6364136223846793005 + 1442695040888963407
			if _, err := a.WriteAt(p, int64(x>>33)%blocks*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkArray(b *testing.B) {
	b.Run("raid5-5/4k-random-write", func(b *testing.B) { benchSmallWrites(b, md.LevelRAID5, 5) })
	b.Run("raid6-6/4k-random-write", func(b *testing.B) { benchSmallWrites(b, md.LevelRAID6, 6) })
	b.Run("raid10-4/4k-random-write", func(b *testing.B) { benchSmallWrites(b, md.LevelRAID10, 4) })
	for _, g := range []geometry{{md.LevelRAID5, 5}, {md.LevelRAID6, 6}} {
		b.Run(fmt.Sprintf("raid%d-%d/full-stripe-write", g.level, g.n), func(b *testing.B) { benchArray(b, g.level, g.n, false, true) })
		b.Run(fmt.Sprintf("raid%d-%d/read", g.level, g.n), func(b *testing.B) { benchArray(b, g.level, g.n, false, false) })
		b.Run(fmt.Sprintf("raid%d-%d/degraded-read", g.level, g.n), func(b *testing.B) { benchArray(b, g.level, g.n, true, false) })
	}
}
