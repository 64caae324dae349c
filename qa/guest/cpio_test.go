package guest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// cpioEntry is one entry read back by readCPIO.
type cpioEntry struct {
	Name         string
	Mode         uint32
	Data         string
	Major, Minor uint32
}

// readCPIO parses a newc archive (test-only reader, used to check the writer) up to the trailer.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	field := func(i int) (uint32, error) {
		s := string(b[off+6+8*i : off+6+8*i+8])
		v, err := strconv.ParseUint(s, 16, 32)
		return uint32(v), err
	}
	for {
		if off+cpioHeaderSize > len(b) {
			return nil, fmt.Errorf("header at %d truncated", off)
		}
		if string(b[off:off+6]) != cpioMagic {
			return nil, fmt.Errorf("bad magic at %d: %q", off, b[off:off+6])
		}
		var f [13]uint32
		for i := range f {
			v, err := field(i)
			if err != nil {
				return nil, fmt.Errorf("field %d at %d: %v", i, off, err)
			}
			f[i] = v
		}
		mode, size, rmaj, rmin, namesize := f[1], f[6], f[9], f[10], f[11]
		nameStart := off + cpioHeaderSize
		name := string(b[nameStart : nameStart+int(namesize)-1])
		if b[nameStart+int(namesize)-1] != 0 {
			return nil, fmt.Errorf("%s: name not NUL-terminated", name)
		}
		dataStart := (nameStart + int(namesize) + 3) &^ 3
		data := string(b[dataStart : dataStart+int(size)])
		off = (dataStart + int(size) + 3) &^ 3
		if name == cpioTrailer {
			return out, nil
		}
		out = append(out, cpioEntry{name, mode, data, rmaj, rmin})
	}
}

// TestCPIOHeaderLayout pins the newc header's field offsets against the format description.
func TestCPIOHeaderLayout(t *testing.T) {
	h := cpioHeader(0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77)
	if len(h) != cpioHeaderSize {
		t.Fatalf("header is %d bytes, want %d", len(h), cpioHeaderSize)
	}
	for _, c := range []struct {
		off  int
		want string
	}{
		{0, "070701"}, {6, "00000011"}, {14, "00000022"}, {22, "00000000"}, {30, "00000000"},
		{38, "00000033"}, {46, "00000000"}, {54, "00000044"}, {62, "00000000"}, {70, "00000000"},
		{78, "00000055"}, {86, "00000066"}, {94, "00000077"}, {102, "00000000"},
	} {
		if got := string(h[c.off : c.off+len(c.want)]); got != c.want {
			t.Errorf("offset %d: %q, want %q", c.off, got, c.want)
		}
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("etc", 0o755))
	must(w.File("etc/a", 0o644, []byte("hello")))   // data needs padding
	must(w.File("etc/abcd", 0o600, []byte("1234"))) // data already aligned
	must(w.File("etc/empty", 0o644, nil))
	must(w.Symlink("bin", "usr/bin"))
	must(w.CharDev("console", 0o600, 5, 1))
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 4", buf.Len())
	}
	if err := w.File("late", 0o644, nil); err == nil {
		t.Error("an entry after the trailer was accepted")
	}
	if err := newCPIOWriter(io.Discard).File("/abs", 0o644, nil); err == nil {
		t.Error("an absolute name was accepted")
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{"etc", 0o40755, "", 0, 0},
		{"etc/a", 0o100644, "hello", 0, 0},
		{"etc/abcd", 0o100600, "1234", 0, 0},
		{"etc/empty", 0o100644, "", 0, 0},
		{"bin", 0o120777, "usr/bin", 0, 0},
		{"console", 0o20600, "", 5, 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("read back\n%v\nwant\n%v", got, want)
	}
}

func TestWriteTree(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/x"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	var buf bytes.Buffer
	if err := writeTree(&buf, root); err != nil {
		t.Fatal(err)
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{"bin", 0o120777, "usr/bin", 0, 0},
		{"usr", 0o40755, "", 0, 0},
		{"usr/bin", 0o40755, "", 0, 0},
		{"usr/bin/x", 0o100755, "#!/bin/sh\n", 0, 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("read back\n%v\nwant\n%v", got, want)
	}
}

// TestRunInitrd checks the per-boot initramfs: the base image's bytes unchanged, then a gzip member
// holding the script, the token and the caller's files with their parent directories.
func TestRunInitrd(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.gz")
	os.WriteFile(base, []byte("BASE"), 0o644)
	dst := filepath.Join(dir, "run.gz")
	err := writeRunInitrd(dst, base, "tok", RunConfig{Script: "exit 0", Files: []File{{Path: "/etc/iscsi/x", Data: []byte("y")}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	if string(b[:4]) != "BASE" {
		t.Fatalf("base not copied first: %q", b[:4])
	}
	zr, err := gzip.NewReader(bytes.NewReader(b[4:]))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readCPIO(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{"guest", 0o40755, "", 0, 0},
		{"guest/script", 0o100755, "exit 0", 0, 0},
		{"guest/token", 0o100644, "tok\n", 0, 0},
		{"etc", 0o40755, "", 0, 0},
		{"etc/iscsi", 0o40755, "", 0, 0},
		{"etc/iscsi/x", 0o100644, "y", 0, 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("read back\n%v\nwant\n%v", got, want)
	}
	if err := writeRunInitrd(dst, base, "tok", RunConfig{Files: []File{{Path: "rel"}}}); err == nil {
		t.Error("a relative guest path was accepted")
	}
}
