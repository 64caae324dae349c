package array

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/raid/disktest"
	"opensan/raid/md"
)

// power cuts every member at the same instant: member I/O holds it shared, the cut holds it exclusive,
// so no operation straddles the cut.
type power struct{ mu sync.RWMutex }

type powered struct {
	*disktest.Crashable
	p *power
}

func (d powered) ReadAt(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	return d.Crashable.ReadAt(b, off)
}

func (d powered) WriteAt(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	return d.Crashable.WriteAt(b, off)
}

func (d powered) WriteAtFUA(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	return d.Crashable.WriteAtFUA(b, off)
}

func (d powered) Flush() error {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	return d.Crashable.Flush()
}

// TestCrash: random writes and flushes run until the power fails at a random instant; every member keeps
// a random subset of its unflushed writes. Reassembled, the array must hold every byte as of the last
// completed flush (except ranges written after it), and once the resync ran, check finds no mismatch.
func TestCrash(t *testing.T) {
	for _, tc := range []struct {
		g      geometry
		bitmap bool
	}{
		{geometry{md.LevelRAID1, 2}, false}, {geometry{md.LevelRAID10, 3}, true}, {geometry{md.LevelRAID5, 4}, false},
		{geometry{md.LevelRAID5, 3}, true}, {geometry{md.LevelRAID6, 5}, false}, {geometry{md.LevelRAID6, 4}, true},
	} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("raid%d-%d-bitmap%v-seed%d", tc.g.level, tc.g.n, tc.bitmap, seed), func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, 99))
				crash := make([]*disktest.Crashable, tc.g.n)
				devs := make([]block.Device, tc.g.n)
				pw := &power{}
				for i := range devs {
					crash[i] = disktest.NewCrashable(64<<10+16*testChunk, 512<<(3*(seed%2))) // 512 and 4096
					devs[i] = powered{crash[i], pw}
				}
				a, err := Create(devs, CreateConfig{Level: tc.g.level, Chunk: testChunk, Name: "crash", DataOffset: 64 << 10, Bitmap: tc.bitmap,
					BitmapChunk: testChunk, BitmapDelay: 2 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				a.WaitSync()
				// Stop cleanly and start again, so the superblocks say clean when the workload begins:
				// only the dirty/clean protocol can then make the next assembly resync.
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				if a, err = Assemble(devs, AssembleConfig{BitmapDelay: 2 * time.Millisecond}); err != nil {
					t.Fatal(err)
				}
				if !a.InSync() {
					t.Fatal("clean array assembled out of sync")
				}
				size := a.Size()
				var mu sync.Mutex
				durable := make([]byte, size)   // content as of the last completed flush
				current := make([]byte, size)   // content as written
				uncertain := make([]bool, size) // written since the last flush
				stop := make(chan struct{})
				done := make(chan struct{})
				wr := rand.New(rand.NewPCG(seed, 7))
				go func() {
					defer close(done)
					for {
						select {
						case <-stop:
							return
						default:
						}
						if wr.IntN(6) == 0 {
							mu.Lock()
							snap := bytes.Clone(current)
							mu.Unlock()
							if a.Flush() != nil {
								return
							}
							mu.Lock()
							copy(durable, snap)
							// Only writes issued after the snapshot stay uncertain; simpler: none are
							// outstanding since this goroutine is the only writer.
							clear(uncertain)
							mu.Unlock()
							continue
						}
						bs := int64(a.LogicalBlockSize())
						n := (1 + wr.Int64N(3*testChunk/bs)) * bs
						off := wr.Int64N((size-n)/bs+1) * bs
						p := make([]byte, n)
						for i := range p {
							p[i] = byte(wr.Uint32())
						}
						mu.Lock()
						for i := off; i < off+n; i++ {
							uncertain[i] = true
						}
						mu.Unlock()
						if _, err := a.WriteAt(p, off); err != nil {
							return
						}
						mu.Lock()
						copy(current[off:], p)
						mu.Unlock()
					}
				}()
				time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
				pw.mu.Lock()
				after := make([]block.Device, tc.g.n)
				for i, c := range crash {
					rr := rand.New(rand.NewPCG(seed, uint64(i)))
					after[i] = c.Crash(func(int) bool { return rr.IntN(2) == 0 })
				}
				pw.mu.Unlock()
				close(stop)
				<-done

				b, err := Assemble(after, AssembleConfig{})
				if err != nil {
					t.Fatal(err)
				}
				b.WaitSync()
				if tc.bitmap && b.Resynced() == b.stripes() && b.stripes() > 4 {
					t.Logf("bitmap resync rewrote all %d units", b.Resynced())
				}
				got := make([]byte, size)
				if _, err := b.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				for i := range got {
					if !uncertain[i] && got[i] != durable[i] {
						mu.Unlock()
						t.Fatalf("byte %d: %#x, flushed %#x", i, got[i], durable[i])
					}
				}
				mu.Unlock()
				if bad, err := b.Check(); err != nil || bad != 0 {
					t.Fatalf("after resync: %d mismatches, %v", bad, err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
