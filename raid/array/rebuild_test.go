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

// rebuildLevels are the redundant layouts a spare can be rebuilt for, odd RAID10 included.
var rebuildLevels = []struct{ level, n int }{
	{md.LevelRAID1, 2}, {md.LevelRAID1, 3}, {md.LevelRAID5, 3}, {md.LevelRAID5, 4},
	{md.LevelRAID6, 4}, {md.LevelRAID6, 5}, {md.LevelRAID10, 4}, {md.LevelRAID10, 5},
}

const rebuildMember = 64<<10 + 2<<20 // data offset + 2 MiB

// TestRebuildOntoSpare: an array with a hot spare loses a member while a random workload runs; the spare
// takes its slot and is rebuilt while writes continue; afterwards the array is in sync, reads the model
// back, scrubs clean, and reassembles from the survivors and the rebuilt member alone.
func TestRebuildOntoSpare(t *testing.T) {
	for _, tc := range rebuildLevels {
		for _, bitmap := range []bool{false, true} {
			t.Run(fmt.Sprintf("raid%d-%d-bitmap=%v", tc.level, tc.n, bitmap), func(t *testing.T) {
				seed := uint64(tc.level*100 + tc.n)
				r := rand.New(rand.NewPCG(seed, 2))
				devs := memDevs(tc.n+1, rebuildMember, 512)
				fs := make([]*disktest.Faulty, len(devs))
				for i := range devs {
					fs[i] = disktest.NewFaulty(devs[i], fmt.Sprint(i))
					devs[i] = fs[i]
				}
				a, err := Create(devs, CreateConfig{Level: tc.level, Chunk: testChunk, Name: "test:spare", Now: fixedClock,
					DataOffset: 64 << 10, Spares: 1, Bitmap: bitmap, BitmapChunk: 256 << 10, BitmapDelay: 10 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				a.WaitSync()
				if st := a.Status(); st.Members[tc.n].State != "spare" || st.Degraded != 0 {
					t.Fatalf("after create: %+v", st)
				}
				m := make(model, a.Size())
				for range 100 {
					randomIO(t, r, a, m, 64<<10)
				}
				victim := r.IntN(tc.n)
				fs[victim].Vanish()
				// Writes during the rebuild, from another goroutine, so they race with it.
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 200 {
						randomIO(t, r, a, m, 64<<10)
					}
				}()
				wg.Wait()
				a.WaitSync()
				st := a.Status()
				if st.Degraded != 0 || st.Members[victim].State != "in_sync" || st.Members[victim].DevNumber != uint32(tc.n) {
					t.Fatalf("after rebuild: %+v", st)
				}
				verifyAll(t, a, m)
				if bad, err := a.Check(); err != nil || bad != 0 {
					t.Fatalf("check after rebuild: %d mismatches, %v", bad, err)
				}
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				// The rebuilt member alone (with the survivors) carries the data: fail another member.
				var keep []block.Device
				for i, d := range devs {
					if i != victim {
						keep = append(keep, d)
					}
				}
				b, err := Assemble(keep, AssembleConfig{Now: fixedClock})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				if b.Degraded() != 0 || !b.InSync() {
					t.Fatalf("reassembled: degraded %d, in sync %v", b.Degraded(), b.InSync())
				}
				other := (victim + 1) % tc.n
				b.slot(other).faulty.Store(true)
				verifyAll(t, b, m)
			})
		}
	}
}

// TestReplaceMissingMember: a degraded array (a member gone at assembly) gets a new blank disk with
// AddSpare and rebuilds onto it.
func TestReplaceMissingMember(t *testing.T) {
	for _, tc := range rebuildLevels {
		t.Run(fmt.Sprintf("raid%d-%d", tc.level, tc.n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.level), uint64(tc.n)))
			devs := memDevs(tc.n, rebuildMember, 512)
			a := create(t, devs, tc.level)
			m := make(model, a.Size())
			for range 100 {
				randomIO(t, r, a, m, 64<<10)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			gone := tc.n - 1
			b, err := Assemble(devs[:gone], AssembleConfig{Now: fixedClock})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Degraded() != 1 {
				t.Fatalf("degraded %d", b.Degraded())
			}
			if err := b.AddSpare(block.NewMemory(rebuildMember-4096, 512)); err == nil {
				t.Fatal("a spare too small was taken")
			}
			fresh := block.NewMemory(rebuildMember, 512)
			if err := b.AddSpare(fresh); err != nil {
				t.Fatal(err)
			}
			if err := b.AddSpare(fresh); err == nil {
				t.Fatal("the same device was added twice")
			}
			b.WaitSync()
			if b.Degraded() != 0 {
				t.Fatalf("after rebuild: %+v", b.Status())
			}
			verifyAll(t, b, m)
			if bad, err := b.Check(); err != nil || bad != 0 {
				t.Fatalf("check: %d, %v", bad, err)
			}
			f, err := Examine(fresh)
			if err != nil {
				t.Fatal(err)
			}
			if role := f.Super.DevRoles[f.Super.DevNumber]; role >= uint16(tc.n) || f.Super.FeatureMap&md.FeatureRecoveryOffset != 0 {
				t.Fatalf("new member: role %#x, feature map %#x", role, f.Super.FeatureMap)
			}
		})
	}
}

// TestRebuildResumes: a rebuild stopped by Close leaves its progress in the member's recovery_offset; the
// next assembly resumes from there rather than from the start, and finishes.
func TestRebuildResumes(t *testing.T) {
	for _, level := range []int{md.LevelRAID5, md.LevelRAID1, md.LevelRAID10} {
		t.Run(fmt.Sprintf("raid%d", level), func(t *testing.T) {
			n := 4
			devs := memDevs(n, 64<<10+8<<20, 512)
			r := rand.New(rand.NewPCG(7, uint64(level)))
			a := create(t, devs, level)
			m := make(model, a.Size())
			for range 50 {
				randomIO(t, r, a, m, 256<<10)
			}
			a.Close()
			b, err := Assemble(devs[1:], AssembleConfig{Now: fixedClock})
			if err != nil {
				t.Fatal(err)
			}
			// Slow enough that Close interrupts it: 8 MiB per member at 4 members x 2 MiB/s of I/O.
			b.SetSyncRate(SyncRate{Min: 2 << 20, Max: 2 << 20})
			fresh := block.NewMemory(64<<10+8<<20, 512)
			if err := b.AddSpare(fresh); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for b.Status().Done < 256<<10 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			st := b.Status()
			if st.Action != ActionRecover || st.Done == 0 || st.Done >= st.Total {
				t.Fatalf("rebuild not under way: %+v", st)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := Examine(fresh)
			if err != nil {
				t.Fatal(err)
			}
			off := int64(f.Super.RecoveryOffset) * md.SectorSize
			if f.Super.FeatureMap&md.FeatureRecoveryOffset == 0 || off == 0 || off >= b.memberSize {
				t.Fatalf("recovery offset: feature map %#x, %d bytes of %d", f.Super.FeatureMap, off, b.memberSize)
			}
			c, err := Assemble(append(devs[1:], fresh), AssembleConfig{Now: fixedClock, SyncRate: SyncRate{Min: 2 << 20, Max: 2 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st = c.Status()
			if ms := st.Members[0]; ms.State != "rebuilding" || ms.Recovered < off/c.chunk*c.chunk {
				t.Fatalf("resumed rebuild: %+v, want slot 0 rebuilding from %d", st, off)
			}
			verifyAll(t, c, m) // reads during the rebuild: below the offset from the new member
			c.SetSyncRate(SyncRate{})
			c.kick()
			c.WaitSync()
			if c.Degraded() != 0 {
				t.Fatalf("after the resumed rebuild: %+v", c.Status())
			}
			verifyAll(t, c, m)
			if bad, err := c.Check(); err != nil || bad != 0 {
				t.Fatalf("check: %d, %v", bad, err)
			}
		})
	}
}

// TestRebuildYieldsToForeground: while users do I/O the rebuild keeps to SyncRate.Min; once they stop it
// runs at SyncRate.Max (unlimited here) and finishes.
func TestRebuildYieldsToForeground(t *testing.T) {
	devs := memDevs(4, 64<<10+8<<20, 512)
	a := create(t, devs, md.LevelRAID5)
	a.Close()
	b, err := Assemble(devs[1:], AssembleConfig{Now: fixedClock, SyncRate: SyncRate{Min: 512 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // foreground: small reads, continuously
		defer wg.Done()
		p := make([]byte, 4096)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b.ReadAt(p, i*4096%b.Size())
		}
	}()
	time.Sleep(50 * time.Millisecond) // the pacer sees the load
	if err := b.AddSpare(block.NewMemory(64<<10+8<<20, 512)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	busy := b.Status()
	close(stop)
	wg.Wait()
	// 512 KiB/s of member I/O over 4 members is 128 KiB/s per member: about 128 KiB in the second, one
	// row of 16 KiB at a time; unthrottled it takes a few milliseconds. The bound leaves 16x for a
	// machine so loaded that the reader stalls past foregroundQuiet.
	if busy.Action != ActionRecover || busy.Done > 2<<20 {
		t.Fatalf("under foreground load the rebuild did %d of %d bytes in 1 s at 512 KiB/s: %+v", busy.Done, busy.Total, busy)
	}
	b.WaitSync()
	if b.Degraded() != 0 {
		t.Fatalf("not rebuilt: %+v", b.Status())
	}
}

// TestRepair: corrupted redundancy is found by Check, rewritten by Repair, and the data is unchanged.
func TestRepair(t *testing.T) {
	for _, tc := range rebuildLevels {
		t.Run(fmt.Sprintf("raid%d-%d", tc.level, tc.n), func(t *testing.T) {
			devs := memDevs(tc.n, rebuildMember, 512)
			a := create(t, devs, tc.level)
			defer a.Close()
			r := rand.New(rand.NewPCG(3, uint64(tc.n)))
			m := make(model, a.Size())
			for range 50 {
				randomIO(t, r, a, m, 64<<10)
			}
			// Corrupt a parity chunk (RAID5/6) or a second copy (RAID1/10): never the copy reads prefer.
			var role int
			var off int64
			switch tc.level {
			case md.LevelRAID5, md.LevelRAID6:
				_, p, _ := a.roles(3)
				role, off = p, a.dataOffset+3*a.chunk
			default:
				l := a.copies(3)[1]
				role, off = int(l[0]), l[1]
			}
			junk := bytes.Repeat([]byte{0xa5}, 4096)
			if _, err := devs[role].WriteAt(junk, off+4096); err != nil {
				t.Fatal(err)
			}
			if bad, err := a.Check(); err != nil || bad != 1 {
				t.Fatalf("check: %d mismatches, %v; want 1", bad, err)
			}
			if bad, err := a.Repair(); err != nil || bad != 1 {
				t.Fatalf("repair: %d mismatches, %v; want 1", bad, err)
			}
			if bad, err := a.Check(); err != nil || bad != 0 {
				t.Fatalf("check after repair: %d mismatches, %v", bad, err)
			}
			if a.Status().Mismatches != 0 {
				t.Fatalf("status: %+v", a.Status())
			}
			verifyAll(t, a, m)
		})
	}
}

// TestRandomFailuresWithSpares: members vanish at random points of a random workload, as many as the
// level survives (two for RAID6, in different pairs for RAID10), and spares take their places, one of
// them failing during its own rebuild; reads always match the model, and once the rebuilds are done
// the array is whole and scrubs clean.
func TestRandomFailuresWithSpares(t *testing.T) {
	cases := []struct{ level, n, fails int }{
		{md.LevelRAID1, 3, 2}, {md.LevelRAID5, 4, 1}, {md.LevelRAID6, 5, 2}, {md.LevelRAID10, 4, 2}, {md.LevelRAID10, 6, 2},
	}
	for _, tc := range cases {
		for seed := range uint64(2) {
			t.Run(fmt.Sprintf("raid%d-%d-seed%d", tc.level, tc.n, seed), func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, uint64(tc.level*10+tc.n)))
				spares := tc.fails + 1 // one spare fails while it is rebuilt
				devs := memDevs(tc.n+spares, rebuildMember, 512)
				fs := make([]*disktest.Faulty, len(devs))
				for i := range devs {
					fs[i] = disktest.NewFaulty(devs[i], fmt.Sprint(i))
					devs[i] = fs[i]
				}
				a, err := Create(devs, CreateConfig{Level: tc.level, Chunk: testChunk, Name: "test:faults", Now: fixedClock,
					DataOffset: 64 << 10, Spares: spares, Bitmap: seed%2 == 1, BitmapChunk: 256 << 10})
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				a.WaitSync()
				// Victims: distinct slots; for RAID10 slot 0 and a slot of another pair.
				victims := r.Perm(tc.n)[:tc.fails]
				if tc.level == md.LevelRAID10 {
					victims = []int{0, 2 + r.IntN(tc.n-2)}
				}
				for _, v := range victims {
					fs[v].Inject(disktest.Fault{Op: disktest.OpWrite, Skip: 20 + r.IntN(300), Vanish: true})
				}
				// The first spare dies a little into its rebuild (every spare writes only after it is taken).
				fs[tc.n].Inject(disktest.Fault{Op: disktest.OpWrite, From: 64 << 10, Skip: 10 + r.IntN(20), Vanish: true})
				m := make(model, a.Size())
				for range 600 {
					randomIO(t, r, a, m, 64<<10)
				}
				a.WaitSync()
				st := a.Status()
				if st.Degraded != 0 || st.State != "clean" {
					t.Fatalf("after the rebuilds: %+v", st)
				}
				for _, v := range victims {
					if st.Members[v].DevNumber == uint32(v) {
						t.Fatalf("victim %d was never replaced: %+v", v, st)
					}
				}
				for _, ms := range st.Members {
					if ms.DevNumber == uint32(tc.n) {
						t.Fatalf("the spare that fails during its rebuild is still in the array: %+v", st)
					}
				}
				verifyAll(t, a, m)
				if bad, err := a.Check(); err != nil || bad != 0 {
					t.Fatalf("check after the rebuilds: %d mismatches, %v", bad, err)
				}
			})
		}
	}
}
