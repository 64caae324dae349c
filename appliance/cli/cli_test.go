package cli

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "512K": 512 << 10, "64M": 64 << 20, "1G": 1 << 30, "2t": 2 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "0", "1.5G", "12Q", "99999999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseCHAP(t *testing.T) {
	if c, err := parseCHAP("", ""); c != nil || err != nil {
		t.Errorf("no CHAP: %v, %v", c, err)
	}
	c, err := parseCHAP("alice:s3cret-secret", "target:other-secret")
	if err != nil || c.User != "alice" || c.Secret != "s3cret-secret" || c.MutualUser != "target" || c.MutualSecret != "other-secret" {
		t.Errorf("parseCHAP = %+v, %v", c, err)
	}
	for _, bad := range [][2]string{{"", "t:x"}, {"alice", ""}, {":x", ""}, {"alice:", ""}, {"a:same", "t:same"}, {"a:x", "t"}} {
		if _, err := parseCHAP(bad[0], bad[1]); err == nil {
			t.Errorf("parseCHAP(%q, %q) succeeded, want an error", bad[0], bad[1])
		}
	}
}

func TestMainRejectsBadCommandLines(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"no-such-command"},
		{"serve"},
		{"serve", "--block-size", "1000", "mem:1M"},
		{"serve", "--mutual-chap", "t:x", "mem:1M"},
		{"serve", "--log-level", "loud", "mem:1M"},
		{"serve", "mem:bogus"},
	} {
		if code := Main(context.Background(), args, io.Discard, io.Discard); code != 2 {
			t.Errorf("gatewayd %q exited %d, want 2", args, code)
		}
	}
	if code := Main(context.Background(), []string{"serve", "/no/such/file"}, io.Discard, io.Discard); code != 1 {
		t.Errorf("serving a missing file exited %d, want 1", code)
	}
}

// TestServeAcceptsAndStops runs `gatewayd serve` in-process on a free port, connects, and stops it the way
// a signal would, expecting exit code 0.
func TestServeAcceptsAndStops(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "lun0.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--iqn", "iqn.2026-11.org.opensan:test", disk, "mem:4M"}, io.Discard, pw)
		pw.Close()
	}()
	addr := ""
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			addr = a
		}
	}
	go io.Copy(io.Discard, pr)
	if addr == "" {
		t.Fatalf("gatewayd exited before listening (code %d)", <-done)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("gatewayd serve exited %d after stop, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gatewayd serve did not stop within 20 s")
	}
}
