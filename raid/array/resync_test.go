package array

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"opensan/gateway/block"
	"opensan/raid/md"
)

// TestWritesDuringInitialSync: members start full of garbage; the array is used at once while the
// initial sync runs. Writes above the sync position must not trust the (garbage) parity, so after the
// sync the data matches the model and check finds nothing.
func TestWritesDuringInitialSync(t *testing.T) {
	for _, g := range []geometry{{md.LevelRAID5, 4}, {md.LevelRAID6, 5}, {md.LevelRAID1, 2}, {md.LevelRAID10, 3}} {
		t.Run(fmt.Sprintf("raid%d-%d", g.level, g.n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(g.n)))
			devs := memDevs(g.n, 64<<10+64*testChunk, 512)
			for _, d := range devs {
				junk := make([]byte, d.Size())
				for i := range junk {
					junk[i] = byte(r.Uint32())
				}
				d.WriteAt(junk, 0)
			}
			a, err := Create(devs, CreateConfig{Level: g.level, Chunk: testChunk, Name: "sync", DataOffset: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			m := make(model, a.Size())
			if _, err := a.ReadAt(m, 0); err != nil {
				t.Fatal(err)
			}
			for range 200 {
				randomIO(t, r, a, m, 2*testChunk)
			}
			a.WaitSync()
			verifyAll(t, a, m)
			if bad, err := a.Check(); err != nil || bad != 0 {
				t.Fatalf("after the initial sync: %d mismatches, %v", bad, err)
			}
			// The sync did its job: losing a member now loses nothing.
			a.Close()
			b, err := Assemble(append([]block.Device{}, devs[1:]...), AssembleConfig{})
			if err != nil {
				t.Fatal(err)
			}
			verifyAll(t, b, m)
			b.Close()
		})
	}
}
