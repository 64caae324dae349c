package scsi

import (
	"context"
	"testing"
)

func benchIO(b *testing.B, write bool, blocks uint16) {
	tg, _ := newTestTarget(b, 1<<16)
	n := &Nexus{InitiatorPort: "bench"}
	tg.Execute(context.Background(), &Command{Nexus: n, CDB: []byte{0, 0, 0, 0, 0, 0}})
	data := fill(int(blocks)*512, 7)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cmd := &Command{Nexus: n}
		for pb.Next() {
			tag := nextTag.Add(1)
			lba := uint32(tag*uint64(blocks)) % (1<<16 - uint32(blocks))
			if write {
				cmd.CDB, cmd.DataOut = cdb10(0x2a, 0, lba, blocks), data
			} else {
				cmd.CDB, cmd.DataOut = cdb10(0x28, 0, lba, blocks), nil
			}
			cmd.Tag = tag
			r := tg.Execute(context.Background(), cmd)
			if r.Status != StatusGood {
				b.Fatalf("status %#x sense %x", r.Status, r.Sense)
			}
			r.Release()
		}
	})
}

func BenchmarkRead4K(b *testing.B)  { benchIO(b, false, 8) }
func BenchmarkWrite4K(b *testing.B) { benchIO(b, true, 8) }
func BenchmarkRead1M(b *testing.B)  { benchIO(b, false, 2048) }
func BenchmarkWrite1M(b *testing.B) { benchIO(b, true, 2048) }
