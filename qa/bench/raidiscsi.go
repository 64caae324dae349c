package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"opensan/gateway/block"
	"opensan/raid/array"
)

// raidISCSIGroup compares a RAID5 and a RAID6 LUN (`gatewayd serve md:M1,M2,...`, members tmpfs files)
// with a single tmpfs file LUN served by the same gatewayd build: what the RAID engine costs behind the
// iSCSI target, on writes, where parity is computed.
func raidISCSIGroup(ctx context.Context, b *Bench) (*Table, error) {
	t := &Table{
		Title: "RAID over iSCSI: gatewayd md: LUN vs gatewayd file LUN",
		Intro: fmt.Sprintf("Three gatewayd processes of the same build: `serve md:M1,M2,...` over a RAID5 of 5 and a "+
			"RAID6 of 6 members, and `serve FILE` over one file; every member and the file are in %s (tmpfs), "+
			"and every LUN has %d MiB, written over once beforehand (the arrays through raid/array, so parity "+
			"is consistent; they were created in-process with AssumeClean on zero-filled files, %d KiB chunks, "+
			"no bitmap, and stopped clean before gatewayd assembles them). Initiator: `qemu-img bench` as in the "+
			"loopback group. The RAID LUN and the file LUN take turns within each round. The goals are of the "+
			"issue: 4 KiB random writes (each a read-modify-write of a chunk and its parity) at half the file "+
			"LUN's IOPS, 1 MiB sequential writes at 80%% of its MiB/s. A stripe holds 4 data chunks, 2 MiB, so "+
			"each 1 MiB write covers half a stripe; the engine gathers the two halves of a stripe that arrive "+
			"within 1 ms into one full-stripe write (raid/array/gather.go), otherwise it reads the other half.",
			b.ShmDir, b.LUNSize>>20, array.DefaultChunk>>10),
		Ours: "md: LUN", Peer: "file LUN",
	}
	if b.GatewaydErr != nil {
		return t, b.GatewaydErr
	}

	// Every in-process figure before this one has let go of its memory; give it back to the kernel before
	// gigabytes of tmpfs files arrive.
	debug.FreeOSMemory()

	peerFile := filepath.Join(b.ShmDir, fmt.Sprintf("opensan-bench-file-%d.img", os.Getpid()))
	b.Logf("filling %s (%d MiB)", peerFile, b.LUNSize>>20)
	if err := fillFile(peerFile, b.LUNSize); err != nil {
		return t, err
	}
	defer os.Remove(peerFile)

	peer, err := startGatewayd(ctx, b.Gatewayd, peerFile)
	if err != nil {
		return t, fmt.Errorf("gatewayd on the file: %w", err)
	}
	defer peer.stop()
	peer.Name = "gatewayd file"
	for _, c := range peer.Setup {
		t.addCommand(c, c)
	}

	var firstErr error
	var peaks []string // VmHWM of each gatewayd, taken before it stops
	for _, g := range arrayGeometries {
		if ctx.Err() != nil {
			break
		}
		rows, err := raidISCSIGeometry(ctx, b, t, g, peer, &peaks)
		t.Rows = append(t.Rows, rows...)
		if err != nil {
			b.Logf("%s over iSCSI: %v", g, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", g, err)
			}
		}
	}
	if p := peakPart(peer); p != "" {
		peaks = append(peaks, p)
	}
	if len(peaks) > 0 {
		t.Notes = append(t.Notes, "Peak resident set (VmHWM) after the runs: "+strings.Join(peaks, ", ")+".")
	}
	t.Notes = append(t.Notes,
		"MiB/s = 2^20 bytes per second. IOPS = requests per second as timed by the initiator, after login.",
		"Writes are plain WRITE commands with the write cache on (no FUA, no SYNCHRONIZE CACHE).",
	)
	return t, firstErr
}

// raidISCSIGeometry creates the array of geometry g on tmpfs files, serves it and measures it against peer.
func raidISCSIGeometry(ctx context.Context, b *Bench, t *Table, g arrayGeometry, peer *target, peaks *[]string) ([]Row, error) {
	dataDisks := int64(g.n - g.parity())
	memberData := b.LUNSize / dataDisks
	memberData -= memberData % array.DefaultChunk
	paths := make([]string, g.n)
	for i := range paths {
		paths[i] = filepath.Join(b.ShmDir, fmt.Sprintf("opensan-bench-raid%d-%d-m%d.img", g.level, os.Getpid(), i))
		defer os.Remove(paths[i])
	}
	b.Logf("%s: creating and filling the array (%d MiB per member)", g, memberData>>20)
	size, err := createFilledArray(g, paths, memberData)
	if err != nil {
		return nil, err
	}
	ours, err := startGatewayd(ctx, b.Gatewayd, "md:"+strings.Join(paths, ","))
	if err != nil {
		return nil, fmt.Errorf("gatewayd serve md: %w", err)
	}
	defer ours.stop()
	ours.Name = fmt.Sprintf("gatewayd md RAID%d", g.level)
	for _, c := range ours.Setup {
		t.addCommand(c, c)
	}
	figs := []*figure{
		randFigure(fmt.Sprintf("%s: 4 KiB random write, QD 32", g), min(size, b.LUNSize), 32, true, Goal{Ratio: 0.5}),
		seqFigure(fmt.Sprintf("%s: 1 MiB sequential write, QD %d", g, b.SeqDepth), b.SeqDepth, true, Goal{Ratio: 0.8}),
	}
	cmp := &comparison{ours: ours, peer: peer, figs: figs}
	rows, err := cmp.run(ctx, b, t)
	if p := peakPart(ours); p != "" {
		*peaks = append(*peaks, p)
	}
	return rows, err
}

// createFilledArray creates an array of geometry g on new zero-filled files at paths with memberData bytes
// of data each, writes random data over all of it in full stripes and stops it clean. It returns the
// array's size in bytes.
func createFilledArray(g arrayGeometry, paths []string, memberData int64) (int64, error) {
	var devs []block.Device
	closeAll := func() {
		for _, d := range devs {
			d.Close()
		}
	}
	for _, p := range paths {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			closeAll()
			return 0, err
		}
		if err := os.Truncate(p, array.DefaultDataOffset+memberData); err != nil {
			closeAll()
			return 0, err
		}
		d, err := block.OpenFile(p, block.FileOptions{})
		if err != nil {
			closeAll()
			return 0, err
		}
		devs = append(devs, d)
	}
	defer closeAll()
	a, err := array.Create(devs, array.CreateConfig{Level: g.level, Name: fmt.Sprintf("bench%d", g.level), AssumeClean: true})
	if err != nil {
		return 0, err
	}
	stripe := int64(array.DefaultChunk) * int64(g.n-g.parity())
	buf := make([]byte, stripe)
	fillRandom(rand.New(rand.NewPCG(uint64(g.level), 6)), buf)
	for off := int64(0); off+stripe <= a.Size(); off += stripe {
		binary.LittleEndian.PutUint64(buf, uint64(off)) // each stripe distinct
		if _, err := a.WriteAt(buf, off); err != nil {
			a.Close()
			return 0, err
		}
	}
	size := a.Size()
	if err := a.Close(); err != nil {
		return 0, err
	}
	if size%stripe != 0 {
		return 0, errors.New("array size is not a whole number of stripes")
	}
	return size, nil
}
