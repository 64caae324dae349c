package array

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"opensan/gateway/block"
	"opensan/raid/disktest"
	"opensan/raid/md"
)

// TestConcurrentWriters: several goroutines write at once into interleaved 4 KiB slots, so they share
// stripes and race on parity (read-modify-write and reconstruct-write), while members fail underneath.
// Each writer checks its own slots; at the end the whole array matches and check finds no mismatch.
func TestConcurrentWriters(t *testing.T) {
	for _, tc := range []struct {
		g     geometry
		fails int
	}{{geometry{md.LevelRAID5, 4}, 1}, {geometry{md.LevelRAID6, 6}, 2}, {geometry{md.LevelRAID10, 4}, 1}, {geometry{md.LevelRAID1, 3}, 1}} {
		t.Run(fmt.Sprintf("raid%d-%d", tc.g.level, tc.g.n), func(t *testing.T) {
			const writers, slot = 4, 4096
			mems := memDevs(tc.g.n, 64<<10+16*testChunk, 512)
			fs := make([]*disktest.Faulty, tc.g.n)
			devs := make([]block.Device, tc.g.n)
			for i := range devs {
				fs[i] = disktest.NewFaulty(mems[i], fmt.Sprint(i))
				devs[i] = fs[i]
			}
			a := create(t, devs, tc.g.level)
			for i := range tc.fails {
				fs[i*2].Inject(disktest.Fault{Op: disktest.OpWrite, Skip: 100 + 50*i, Vanish: true})
			}
			model := make([]byte, a.Size())
			slots := a.Size() / slot
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 1))
					for range 150 {
						// Slot i belongs to writer i % writers; write a run of own slots.
						first := int64(r.IntN(int(slots/writers)))*writers + int64(w)
						p := make([]byte, slot)
						for i := range p {
							p[i] = byte(r.Uint32())
						}
						if _, err := a.WriteAt(p, first*slot); err != nil {
							errs <- err
							return
						}
						copy(model[first*slot:], p) // disjoint per writer: no lock needed
						got := make([]byte, slot)
						if _, err := a.ReadAt(got, first*slot); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, p) {
							errs <- fmt.Errorf("writer %d: slot %d reads back different", w, first)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if a.Degraded() != tc.fails {
				t.Fatalf("degraded %d, want %d", a.Degraded(), tc.fails)
			}
			verifyAll(t, a, model)
			for i := range tc.fails {
				fs[i*2].Heal()
			}
			a.Close()
			b, err := Assemble(devs, AssembleConfig{})
			if err != nil {
				t.Fatal(err)
			}
			verifyAll(t, b, model)
			b.Close()
		})
	}
}

// TestFlushAndFUA: Flush reaches every member; a FUA write is durable on the members it touched without
// an array flush.
func TestFlushAndFUA(t *testing.T) {
	crash := make([]*disktest.Crashable, 4)
	fs := make([]*disktest.Faulty, 4)
	devs := make([]block.Device, 4)
	for i := range devs {
		crash[i] = disktest.NewCrashable(64<<10+8*testChunk, 512)
		fs[i] = disktest.NewFaulty(crash[i], fmt.Sprint(i))
		devs[i] = fs[i]
	}
	a := create(t, devs, md.LevelRAID5)
	before := make([]int, 4)
	for i := range fs {
		before[i] = fs[i].Ops(disktest.OpFlush)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range fs {
		if fs[i].Ops(disktest.OpFlush) != before[i]+1 {
			t.Fatalf("member %d: %d flushes, want %d", i, fs[i].Ops(disktest.OpFlush), before[i]+1)
		}
	}
	p := bytes.Repeat([]byte{0x5a}, 3*512)
	if _, err := a.WriteAtFUA(p, testChunk+512); err != nil { // RMW inside one chunk: data and parity
		t.Fatal(err)
	}
	after := make([]block.Device, 4)
	for i := range crash {
		after[i] = crash[i].Crash(nil)
	}
	// Lose member holding the data too: the parity written with FUA must rebuild it.
	data := func() int {
		s, k := int64(0), 1
		d, _, _ := a.roles(s)
		return d[k]
	}()
	missing := append(append([]block.Device{}, after[:data]...), after[data+1:]...)
	if _, err := Assemble(missing, AssembleConfig{}); !errors.Is(err, ErrDirtyDegraded) {
		t.Fatalf("dirty degraded raid5 started without force: %v", err)
	}
	b, err := Assemble(missing, AssembleConfig{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if _, err := b.ReadAt(got, testChunk+512); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("FUA write lost after crash: %v", err)
	}
}
