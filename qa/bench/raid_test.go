package main

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"opensan/gateway/block"
	"opensan/qa/bench/isal"
	"opensan/raid/array"
	"opensan/raid/md"
)

// tinyBench is a Bench for in-process groups that finishes in a few seconds, even under -race.
func tinyBench() *Bench {
	return &Bench{Rounds: 1, Secs: 0.1, LUNSize: 64 << 20}
}

func TestOnOneCore(t *testing.T) {
	err := onOneCore(func() error {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return err
		}
		if n := set.Count(); n != 1 {
			t.Errorf("pinned thread may run on %d CPUs, want 1", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := errors.New("x")
	if err := onOneCore(func() error { return want }); err != want {
		t.Fatalf("onOneCore returned %v, want f's error", err)
	}
}

func TestIORate(t *testing.T) {
	var mu sync.Mutex
	seen := map[int64]bool{}
	rate, err := ioRate(context.Background(), 3, 5, 0.05, func(w int, k int64) error {
		if k < 0 || k >= 5 {
			t.Errorf("worker %d got request %d, outside [0, 5)", w, k)
		}
		mu.Lock()
		seen[k] = true
		mu.Unlock()
		return nil
	})
	if err != nil || rate <= 0 {
		t.Fatalf("ioRate = %v, %v", rate, err)
	}
	for k := range int64(5) {
		if !seen[k] {
			t.Errorf("request %d never issued", k)
		}
	}
	boom := errors.New("boom")
	if _, err := ioRate(context.Background(), 2, 10, 1, func(int, int64) error { return boom }); err != boom {
		t.Fatalf("ioRate error = %v, want the op's", err)
	}
}

// The parity group measures ours always and ISA-L when built in; both must agree with each other (the
// group checks that itself after the warm-up).
func TestMeasureParity(t *testing.T) {
	row := Row{Figure: "P+Q"}
	var cpuT, wallT [2]time.Duration
	err := onOneCore(func() error {
		return measureParity(context.Background(), tinyBench(), parityCase{pq: true, size: 64 << 10}, &row, &cpuT, &wallT)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(row.Ours.Samples) != 1 || row.Ours.Samples[0] <= 0 || row.Ours.Err != "" {
		t.Fatalf("ours: %+v", row.Ours)
	}
	if isal.Available != (row.Peer.Err == "") {
		t.Fatalf("ISA-L available %v, peer %+v", isal.Available, row.Peer)
	}
}

func TestArrayFiguresSmall(t *testing.T) {
	b := tinyBench()
	rows, err := measureGeometry(context.Background(), b, arrayGeometry{md.LevelRAID6, 6}, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, r := range rows {
		if len(r.Ours.Samples) != 1 || len(r.Peer.Samples) != 1 || r.Ours.Err != "" || r.Peer.Err != "" {
			t.Errorf("%s: ours %+v, peer %+v", r.Figure, r.Ours, r.Peer)
		}
	}
}

func TestRebuildSmall(t *testing.T) {
	row, err := measureRebuild(context.Background(), tinyBench(), arrayGeometry{md.LevelRAID5, 5}, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(row.Ours.Samples) != 1 || len(row.Peer.Samples) != 1 {
		t.Fatalf("ours %+v, peer %+v", row.Ours, row.Peer)
	}
}

// createFilledArray leaves members that assemble into a clean, in-sync array of the full size.
func TestCreateFilledArray(t *testing.T) {
	dir := t.TempDir()
	g := arrayGeometry{md.LevelRAID5, 3}
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")}
	size, err := createFilledArray(g, paths, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if size != 2*4<<20 {
		t.Fatalf("size %d, want %d", size, 2*4<<20)
	}
	var devs []block.Device
	for _, p := range paths {
		d, err := block.OpenFile(p, block.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
		defer d.Close()
	}
	a, err := array.Assemble(devs, array.AssembleConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Size() != size || a.Degraded() != 0 || !a.InSync() {
		t.Fatalf("assembled: size %d degraded %d in sync %v", a.Size(), a.Degraded(), a.InSync())
	}
	if bad, err := a.Check(); err != nil || bad != 0 {
		t.Fatalf("check: %d mismatches, %v", bad, err)
	}
}
