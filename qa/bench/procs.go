package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Time limits, wall-clock.
const (
	// startTimeout bounds how long a daemon may take to accept TCP connections.
	startTimeout = 15 * time.Second
	// stopGrace is how long a daemon gets after SIGTERM before SIGKILL. tgtd ignores SIGTERM while it
	// has targets configured, so it always ends up killed; that is fine for a benchmark peer.
	stopGrace = 3 * time.Second
	// buildTimeout bounds `go build ./cmd/gatewayd` on a cold cache on a 2-core machine.
	buildTimeout = 5 * time.Minute
	// adminTimeout bounds one tgtadm call.
	adminTimeout = 20 * time.Second
)

// result is one finished external command.
type result struct {
	cmdline string
	stdout  string
	stderr  string
	elapsed time.Duration
}

// run runs name args with a time limit in its own process group (killed whole on timeout), and returns
// its output. A non-zero exit or a timeout is an error that carries the command line and its stderr.
func run(ctx context.Context, timeout time.Duration, dir, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	err := cmd.Run()
	r := result{cmdline: shellLine(name, args), stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(begin)}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w\n%s", r.cmdline, err, lastLines(r.stdout+r.stderr, 8))
	}
	return r, nil
}

// shellLine renders a command line the way one would type it into a shell.
func shellLine(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$&;|<>*?()[]{}\\`!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// lastLines returns the last n lines of s (for error messages).
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// daemon is a background process (a target or the iperf3 server) in its own process group.
type daemon struct {
	name    string
	cmdline string
	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{}
	err     error
}

func startDaemon(name string, argv ...string) (*daemon, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &daemon{name: name, cmdline: shellLine(argv[0], argv[1:]), cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", d.cmdline, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitTCP waits until addr accepts a connection, the daemon exits, or startTimeout passes.
func (d *daemon) waitTCP(ctx context.Context, addr string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if d.exited() {
			return fmt.Errorf("%s exited before accepting connections on %s: %v\n%s", d.name, addr, d.err, lastLines(d.out.String(), 8))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not accept connections on %s within %v\n%s", d.name, addr, startTimeout, lastLines(d.out.String(), 8))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM to the daemon's process group, then SIGKILL after stopGrace, and waits for it.
func (d *daemon) stop() {
	if d == nil || d.exited() {
		return
	}
	pid := d.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(stopGrace):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-d.done
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// buildGatewayd builds ./cmd/gatewayd into dir and returns the binary's path.
func buildGatewayd(ctx context.Context, root, dir string) (string, error) {
	path := filepath.Join(dir, "gatewayd")
	if _, err := run(ctx, buildTimeout, root, "go", "build", "-o", path, "./cmd/gatewayd"); err != nil {
		return "", err
	}
	return path, nil
}

// fillFile creates path with size bytes of non-zero data, so that reads hit real pages rather than the
// holes of a sparse tmpfs file (which read as the shared zero page and flatter every target alike).
func fillFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*131 + 7)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		// Make each MiB distinct so nothing down the line can dedupe or compress it.
		buf[0], buf[1], buf[2], buf[3] = byte(off>>20), byte(off>>28), byte(off>>36), 0xA5
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			f.Close()
			os.Remove(path)
			return fmt.Errorf("filling %s at byte %d: %w", path, off, err)
		}
	}
	return f.Close()
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs     int
	CPUModel string
	Kernel   string
	Go       string
	// Commit is the repository's HEAD, with a mark when tracked files differ from it.
	Commit    string
	Tools     []string // "name: version"
	LoadStart string
}

func describeMachine(ctx context.Context, root string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", Go: runtime.Version(), LoadStart: loadAvg(), Commit: "unknown"}
	// Read-only git plumbing: rev-parse and diff-index do not touch the index.
	if r, err := run(ctx, 10*time.Second, root, "git", "rev-parse", "--short=12", "HEAD"); err == nil {
		m.Commit = strings.TrimSpace(r.stdout)
		if _, err := run(ctx, 10*time.Second, root, "git", "diff-index", "--quiet", "HEAD", "--"); err != nil {
			m.Commit += " with uncommitted changes to tracked files"
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	for _, t := range [][]string{
		{"qemu-img", "--version"},
		{"tgtd", "--version"},
		{"iperf3", "--version"},
		{"dpkg-query", "-W", "-f", "libiscsi-bin ${Version}", "libiscsi-bin"},
	} {
		r, err := run(ctx, 10*time.Second, "", t[0], t[1:]...)
		v := strings.TrimSpace(strings.SplitN(r.stdout+r.stderr, "\n", 2)[0])
		if err != nil && v == "" {
			v = "not available"
		}
		if !strings.Contains(v, t[0]) && !strings.HasPrefix(v, "iperf") && !strings.HasPrefix(v, "libiscsi") {
			v = t[0] + " " + v
		}
		m.Tools = append(m.Tools, v)
	}
	return m
}

// cpuModel returns the first "model name" of a /proc/cpuinfo text.
func cpuModel(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// lockedBuffer is a bytes.Buffer safe for one writer goroutine and concurrent readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
