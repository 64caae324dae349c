package block

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// devices returns one fresh device of each kind, size bytes, block size bs.
func devices(t *testing.T, size int64, bs int) map[string]Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, FileOptions{LogicalBlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return map[string]Device{"memory": NewMemory(size, bs), "file": f}
}

// TestDevicesAgreeWithModel runs random reads, writes and discards on every backend and checks each read
// against a plain byte slice.
func TestDevicesAgreeWithModel(t *testing.T) {
	const size = 1 << 20
	for _, bs := range []int{512, 4096} {
		for name, d := range devices(t, size, bs) {
			t.Run(name, func(t *testing.T) {
				if d.Size() != size || d.LogicalBlockSize() != bs {
					t.Fatalf("Size, LogicalBlockSize = %d, %d; want %d, %d", d.Size(), d.LogicalBlockSize(), size, bs)
				}
				model := make([]byte, size)
				rng := rand.New(rand.NewPCG(1, uint64(bs)))
				for i := 0; i < 300; i++ {
					off := int64(rng.IntN(size/bs)) * int64(bs)
					n := int64(1+rng.IntN(40)) * int64(bs)
					n = min(n, size-off)
					switch rng.IntN(3) {
					case 0:
						p := make([]byte, n)
						for j := range p {
							p[j] = byte(rng.Uint32())
						}
						if _, err := d.WriteAt(p, off); err != nil {
							t.Fatal(err)
						}
						copy(model[off:], p)
					case 1:
						if err := d.Discard(off, n); err != nil {
							t.Fatal(err)
						}
						clear(model[off : off+n])
					case 2:
						p := make([]byte, n)
						if _, err := d.ReadAt(p, off); err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(p, model[off:off+n]) {
							t.Fatalf("op %d: read %d bytes at %d differs from the model", i, n, off)
						}
					}
				}
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
				all := make([]byte, size)
				if _, err := d.ReadAt(all, 0); err != nil || !bytes.Equal(all, model) {
					t.Fatalf("final read: err %v, equal %v", err, bytes.Equal(all, model))
				}
			})
		}
	}
}

func TestOutOfRangeIsRefused(t *testing.T) {
	for name, d := range devices(t, 64<<10, 512) {
		t.Run(name, func(t *testing.T) {
			p := make([]byte, 1024)
			for _, off := range []int64{-512, 64<<10 - 512, 64 << 10} {
				if _, err := d.WriteAt(p, off); !errors.Is(err, ErrOutOfRange) {
					t.Errorf("WriteAt(1024 bytes, %d) = %v, want ErrOutOfRange", off, err)
				}
				if _, err := d.ReadAt(p, off); !errors.Is(err, ErrOutOfRange) {
					t.Errorf("ReadAt(1024 bytes, %d) = %v, want ErrOutOfRange", off, err)
				}
			}
			if err := d.Discard(0, 65<<10); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Discard past the end = %v, want ErrOutOfRange", err)
			}
		})
	}
}

func TestReadOnlyFileRefusesWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.img")
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteAt on a read-only file = %v, want ErrReadOnly", err)
	}
	if err := f.Discard(0, 512); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Discard on a read-only file = %v, want ErrReadOnly", err)
	}
}

func TestOpenFileRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	tiny := filepath.Join(dir, "tiny")
	os.WriteFile(tiny, make([]byte, 100), 0o600)
	for _, tc := range []struct {
		path string
		opts FileOptions
	}{
		{filepath.Join(dir, "missing"), FileOptions{}},
		{dir, FileOptions{}},
		{tiny, FileOptions{}},
		{tiny, FileOptions{LogicalBlockSize: 1000}},
	} {
		if d, err := OpenFile(tc.path, tc.opts); err == nil {
			d.Close()
			t.Errorf("OpenFile(%s, %+v) succeeded, want an error", tc.path, tc.opts)
		}
	}
}

func TestConcurrentWritesToDistinctRanges(t *testing.T) {
	for name, d := range devices(t, 4<<20, 512) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := bytes.Repeat([]byte{byte(w + 1)}, 512<<10)
					if _, err := d.WriteAt(p, int64(w)<<19); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			p := make([]byte, 512<<10)
			for w := 0; w < 8; w++ {
				d.ReadAt(p, int64(w)<<19)
				if !bytes.Equal(p, bytes.Repeat([]byte{byte(w + 1)}, 512<<10)) {
					t.Fatalf("range %d holds the wrong data", w)
				}
			}
		})
	}
}

func TestWriteFUAFallsBackToFlush(t *testing.T) {
	d := NewMemory(8192, 512)
	if n, err := WriteFUA(d, []byte("0123456789"), 100); n != 10 || err != nil {
		t.Fatalf("WriteFUA = %d, %v", n, err)
	}
	p := make([]byte, 10)
	d.ReadAt(p, 100)
	if string(p) != "0123456789" {
		t.Fatalf("read back %q", p)
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{512, 4096, 1 << 20} {
		if b := AlignedBuffer(n); len(b) != n || !aligned(b) {
			t.Fatalf("AlignedBuffer(%d): len %d aligned %v", n, len(b), aligned(b))
		}
	}
}

// TestDirectFileBouncesUnalignedBuffers opens a file with O_DIRECT and does I/O from a buffer that is not
// 4096-byte aligned in memory, which the kernel would refuse without the bounce buffers.
func TestDirectFileBouncesUnalignedBuffers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "direct.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, FileOptions{Direct: true, LogicalBlockSize: 4096})
	if err != nil {
		t.Skipf("the filesystem under %s has no O_DIRECT: %v", path, err)
	}
	defer f.Close()
	raw := make([]byte, 8192+1)
	p := raw[1:] // misaligned by one byte
	for i := range p {
		p[i] = byte(i * 7)
	}
	if _, err := f.WriteAt(p, 4096); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 8192+3)[3:]
	if _, err := f.ReadAt(back, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, p) {
		t.Fatal("O_DIRECT read back differs from what was written")
	}
	if _, err := f.WriteAt(p[:512], 4096); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("a 512-byte write on a 4096-byte O_DIRECT device = %v, want ErrUnaligned", err)
	}
}
