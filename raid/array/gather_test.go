package array

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"opensan/raid/disktest"
	"opensan/raid/md"
)

// TestGatherFullStripe: two writes of a stream, each half a stripe, arrive together: they make one
// full-stripe write that reads nothing from the members, and both complete.
func TestGatherFullStripe(t *testing.T) {
	for _, level := range []int{md.LevelRAID5, md.LevelRAID6} {
		t.Run(fmt.Sprintf("raid%d", level), func(t *testing.T) {
			n := 6
			devs := memDevs(n, rebuildMember, 512)
			fs := make([]*disktest.Faulty, n)
			for i := range devs {
				fs[i] = disktest.NewFaulty(devs[i], fmt.Sprint(i))
				devs[i] = fs[i]
			}
			a := create(t, devs, level)
			defer a.Close()
			a.gathering.wait = 5 * time.Second // the test's goroutines may start late on a busy machine
			stripe := int64(a.dataDisks) * a.chunk
			half := (int64(a.dataDisks) / 2) * a.chunk
			data := make([]byte, stripe)
			for i := range data {
				data[i] = byte(i * 7)
			}
			reads := 0
			for _, f := range fs {
				reads += f.Ops(disktest.OpRead)
			}
			// Writes 1 and 2 are a stream: close to each other, and 1 close to an earlier one.
			var wg sync.WaitGroup
			errs := make([]error, 2)
			a.gathering.near(2*stripe, stripe)
			for i, part := range [][2]int64{{0, half}, {half, stripe}} { // the second covers the rest
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = a.WriteAt(data[part[0]:part[1]], 3*stripe+part[0])
				}()
				time.Sleep(20 * time.Millisecond) // 1 is waiting when 2 arrives
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatal(errs)
			}
			if got := a.Gathered(); got != 1 {
				t.Fatalf("gathered %d writes, want 1", got)
			}
			after := 0
			for _, f := range fs {
				after += f.Ops(disktest.OpRead)
			}
			if after != reads {
				t.Fatalf("the gathered write read %d times from the members, want none (a full stripe)", after-reads)
			}
			got := make([]byte, stripe)
			if _, err := a.ReadAt(got, 3*stripe); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back differs (%v)", err)
			}
			if bad, err := a.Check(); err != nil || bad != 0 {
				t.Fatalf("check: %d, %v", bad, err)
			}
		})
	}
}

// TestGatherStreams: several goroutines write a sequential stream of chunk-sized writes (a queue depth
// of several, as an initiator streaming a file), pass after pass with new data; the array always reads
// back the last pass and its parity checks out, whether writes were gathered or not.
func TestGatherStreams(t *testing.T) {
	for _, level := range []int{md.LevelRAID5, md.LevelRAID6} {
		t.Run(fmt.Sprintf("raid%d", level), func(t *testing.T) {
			devs := memDevs(5, rebuildMember, 512)
			a := create(t, devs, level)
			defer a.Close()
			size := a.Size()
			w := a.chunk
			m := make(model, size)
			r := rand.New(rand.NewPCG(1, uint64(level)))
			for pass := range 4 {
				next := make(chan int64)
				var wg sync.WaitGroup
				for range 6 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for off := range next {
							if _, err := a.WriteAt(m[off:off+w], off); err != nil {
								t.Error(err)
							}
						}
					}()
				}
				for i := range m {
					m[i] = byte(r.Uint32())
				}
				for off := int64(0); off+w <= size; off += w {
					next <- off
				}
				close(next)
				wg.Wait()
				t.Logf("pass %d: %d writes gathered so far", pass, a.Gathered())
			}
			verifyAll(t, a, m)
			if bad, err := a.Check(); err != nil || bad != 0 {
				t.Fatalf("check: %d, %v", bad, err)
			}
		})
	}
}

// TestGatherBacksOff: a stream of one write at a time never completes a stripe while a write waits, so
// after missMax waits nobody joined, its partial-stripe writes stop waiting.
func TestGatherBacksOff(t *testing.T) {
	a := create(t, memDevs(5, rebuildMember, 512), md.LevelRAID5)
	defer a.Close()
	half := 2 * a.chunk
	p := make([]byte, half)
	for i := range int64(missMax) {
		if _, err := a.WriteAt(p, i*half); err != nil { // first halves wait and time out, second halves don't wait
			t.Fatal(err)
		}
	}
	for i := int64(missMax); i < 2*missMax+2; i++ {
		if _, err := a.WriteAt(p, i*half); err != nil {
			t.Fatal(err)
		}
	}
	a.gathering.mu.Lock()
	defer a.gathering.mu.Unlock()
	if a.gathering.skip == 0 || a.gathering.merged != 0 {
		t.Fatalf("after %d lone waits: skip %d, merged %d", 2*missMax+2, a.gathering.skip, a.gathering.merged)
	}
}
