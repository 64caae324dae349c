//go:build qa

// Package harness starts the targets the qa suites test against (gatewayd, and Debian's tgt as the
// reference peer), makes backing files, and runs the external initiators (libiscsi tools, qemu-io) with a
// time limit.
//
// Everything here is for tests: helpers take a testing.TB, fail it on setup errors and register their own
// cleanup. Missing tools are failures, not skips, because build.sh installs them.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts, all wall-clock.
const (
	// StartTimeout bounds how long a daemon may take to accept TCP connections after it was started.
	StartTimeout = 15 * time.Second
	// StopTimeout bounds how long a daemon may take to exit after SIGTERM. gatewayd gives in-flight
	// commands 10 s before aborting them, so this leaves it 10 s on top.
	StopTimeout = 20 * time.Second
	// buildTimeout bounds `go build ./cmd/gatewayd` on a cold cache on the 2-core CI box.
	buildTimeout = 5 * time.Minute
)

// Kind names the target implementation behind a Daemon.
type Kind string

const (
	KindGatewayd Kind = "gatewayd"
	KindTgt      Kind = "tgt"
)

// Daemon is a running target: one process serving one iSCSI target on a loopback portal.
type Daemon struct {
	Kind Kind
	// Addr is the portal, "127.0.0.1:PORT".
	Addr string
	// IQN is the target name.
	IQN string
	// FirstLUN is the LUN of the first exported file: 0 on gatewayd, 1 on tgt (whose LUN 0 is its
	// controller).
	FirstLUN int

	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has been waited for
	err    error         // the Wait error, valid after done

	stop        func()        // asks the process to exit; nil means SIGTERM
	stopTimeout time.Duration // how long stop may take before SIGKILL; 0 means StopTimeout
}

// URL returns the libiscsi URL of lun: "iscsi://127.0.0.1:PORT/IQN/LUN".
func (d *Daemon) URL(lun int) string { return fmt.Sprintf("iscsi://%s/%s/%d", d.Addr, d.IQN, lun) }

// PortalURL returns the libiscsi URL of the portal alone (for iscsi-ls discovery).
func (d *Daemon) PortalURL() string { return "iscsi://" + d.Addr }

// CHAPURL returns URL(lun) with CHAP credentials: user and secret authenticate the initiator; when
// targetUser is not empty the initiator also demands mutual CHAP with targetUser and targetSecret.
func (d *Daemon) CHAPURL(lun int, user, secret, targetUser, targetSecret string) string {
	return chapURL(fmt.Sprintf("%s/%s/%d", d.Addr, d.IQN, lun), user, secret, targetUser, targetSecret)
}

// CHAPPortalURL is PortalURL with CHAP credentials, see CHAPURL.
func (d *Daemon) CHAPPortalURL(user, secret, targetUser, targetSecret string) string {
	return chapURL(d.Addr, user, secret, targetUser, targetSecret)
}

func chapURL(rest, user, secret, targetUser, targetSecret string) string {
	u := fmt.Sprintf("iscsi://%s%%%s@%s", user, secret, rest)
	if targetUser != "" {
		u += fmt.Sprintf("?target_user=%s&target_password=%s", targetUser, targetSecret)
	}
	return u
}

// Pid returns the daemon's process id (for /proc/PID/status).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stderr returns what the daemon wrote to stderr so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// tailLines is how much of a daemon's log a failed test shows: gatewayd logs every session at info.
const tailLines = 150

// StderrTail returns the last n lines of Stderr.
func (d *Daemon) StderrTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Stderr(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d earlier lines left out]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// Exited reports whether the process has ended (crashed, or stopped).
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to StopTimeout; it kills the process after that. It returns the exit
// error (nil for status 0). Calling it again returns the same result.
func (d *Daemon) Stop() error {
	timeout := StopTimeout
	if d.stopTimeout != 0 {
		timeout = d.stopTimeout
	}
	if !d.Exited() {
		if d.stop != nil {
			d.stop()
		} else {
			d.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("%s did not exit within %v of being stopped; killed", d.Kind, timeout)
	}
}

// Kill ends the daemon with SIGKILL at once (a crash); cleanup then only reaps it.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// start runs cmd with stderr (and stdout) captured, and waits in the background.
func start(t testing.TB, kind Kind, cmd *exec.Cmd) *Daemon {
	t.Helper()
	d := &Daemon{Kind: kind, cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = d.stderr
	cmd.Stderr = d.stderr
	// Own process group, so a test killed by the go tool's timeout does not leave the daemon behind and a
	// signal meant for it does not reach the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d
}

// waitTCP waits until addr accepts a TCP connection, the daemon exits, or StartTimeout passes.
func (d *Daemon) waitTCP(t testing.TB) {
	t.Helper()
	if err := d.tryWaitTCP(); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, d.Stderr())
	}
}

func (d *Daemon) tryWaitTCP() error {
	deadline := time.Now().Add(StartTimeout)
	for {
		c, err := net.DialTimeout("tcp", d.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if d.Exited() {
			return fmt.Errorf("%s exited before accepting connections on %s: %v", d.Kind, d.Addr, d.err)
		}
		if time.Now().After(deadline) {
			d.cmd.Process.Kill()
			<-d.done
			return fmt.Errorf("%s did not accept connections on %s within %v", d.Kind, d.Addr, StartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var build struct {
	once sync.Once
	path string
	err  error
}

// Gatewayd returns the path of a gatewayd binary: $GATEWAYD if set, else ./cmd/gatewayd built once per
// test process into a temporary directory (removed by Main).
func Gatewayd(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GATEWAYD"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("$GATEWAYD: %v", err)
		}
		return p
	}
	build.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		dir, err := os.MkdirTemp("", "opensan-qa-bin-")
		if err != nil {
			build.err = err
			return
		}
		buildDirs = append(buildDirs, dir)
		path := filepath.Join(dir, "gatewayd")
		out := RunIn(root, buildTimeout, nil, "go", "build", "-o", path, "./cmd/gatewayd")
		if out.Err != nil {
			build.err = fmt.Errorf("go build ./cmd/gatewayd: %v\n%s", out.Err, out.Combined())
			return
		}
		build.path = path
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

var buildDirs []string

// Main runs the tests of a qa package and then removes the binary Gatewayd built. Use it from TestMain:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// ModuleRoot returns the directory holding go.mod (the repository root), found from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// StartGatewayd starts `gatewayd serve --listen 127.0.0.1:PORT args...` on a free port and waits until it
// accepts TCP. args are the remaining serve flags and the backing files. On cleanup it sends SIGTERM and
// fails the test unless gatewayd exits with status 0 within StopTimeout; if the test failed, gatewayd's
// stderr goes into the test log.
func StartGatewayd(t testing.TB, args ...string) *Daemon {
	t.Helper()
	bin := Gatewayd(t)
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	d := start(t, KindGatewayd, cmd)
	d.Addr = addr
	t.Cleanup(func() {
		err := d.Stop()
		if err != nil {
			t.Errorf("gatewayd did not stop cleanly on SIGTERM: %v", err)
		}
		if t.Failed() {
			t.Logf("gatewayd stderr (last %d lines):\n%s", tailLines, d.StderrTail(tailLines))
		}
	})
	d.waitTCP(t)
	// gatewayd prints "target IQN" before "listening on ADDR"; the port answering means both are out.
	for _, line := range strings.Split(d.Stderr(), "\n") {
		if iqn, ok := strings.CutPrefix(line, "target "); ok {
			d.IQN = strings.TrimSpace(iqn)
		}
	}
	if d.IQN == "" {
		t.Fatalf("gatewayd did not print its IQN (\"target IQN\") on stderr:\n%s", d.Stderr())
	}
	return d
}

// TgtOptions describes the one target a tgtd instance serves.
type TgtOptions struct {
	// Files are exported as LUN 1, 2, ... (LUN 0 is tgt's controller).
	Files []string
	// IQN is the target name; empty means iqn.2026-11.org.opensan:tgt.
	IQN string
	// CHAP, if not empty, is "USER:SECRET" the initiator must authenticate with.
	CHAP string
	// MutualCHAP, if not empty, is "USER:SECRET" the target answers with.
	MutualCHAP string
	// Allow lists the initiator names allowed to log in; empty means everyone.
	Allow []string
	// ReadOnly exports every LUN read-only.
	ReadOnly bool
}

// StartTgt starts Debian's tgtd in the foreground on a free loopback port with its own control port
// (the same number, so parallel instances do not share /var/run/tgtd/socket.N), configures the target
// with tgtadm and waits until it accepts TCP. On cleanup it sends SIGTERM; tgt's exit status is only
// logged, since tgt is the reference, not the product.
func StartTgt(t testing.TB, o TgtOptions) *Daemon {
	t.Helper()
	NeedCommand(t, "tgtd")
	NeedCommand(t, "tgtadm")
	if o.IQN == "" {
		o.IQN = "iqn.2026-11.org.opensan:tgt"
	}
	var d *Daemon
	var ctl string
	// tgtd's control port must be below 32768 and its lock (/var/run/tgtd/socket.N.lock) free; other
	// test processes run tgtd too, so a clash shows up as an early exit and we try another number.
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ctl = fmt.Sprint(1024 + port%(32768-1024))
		cmd := exec.Command("tgtd", "-f", "--iscsi", "portal="+addr, "-C", ctl)
		d = start(t, KindTgt, cmd)
		d.Addr, d.IQN, d.FirstLUN = addr, o.IQN, 1
		if d.tryWaitTCP() == nil {
			break
		}
		d.Stop()
		if attempt == 4 {
			t.Fatalf("tgtd did not start on %s (control port %s):\n%s", addr, ctl, d.Stderr())
		}
	}
	// tgtd ignores SIGTERM; it exits once its targets are deleted and it is told to (tgtadm). SIGKILL is
	// the fallback.
	d.stop = func() {
		Run(10*time.Second, "tgtadm", "-C", ctl, "--op", "delete", "--mode", "target", "--tid", "1", "--force")
		Run(10*time.Second, "tgtadm", "-C", ctl, "--op", "delete", "--mode", "system")
	}
	d.stopTimeout = 5 * time.Second
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Logf("tgtd exit: %v", err)
		}
		if t.Failed() {
			t.Logf("tgtd stderr:\n%s", d.Stderr())
		}
		os.Remove("/var/run/tgtd/socket." + ctl)
		os.Remove("/var/run/tgtd/socket." + ctl + ".lock")
	})

	adm := func(args ...string) {
		t.Helper()
		out := Run(30*time.Second, "tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
		if out.Err != nil {
			t.Fatalf("tgtadm %s: %v\n%s", strings.Join(args, " "), out.Err, out.Combined())
		}
	}
	adm("--op", "new", "--mode", "target", "--tid", "1", "-T", o.IQN)
	for i, f := range o.Files {
		args := []string{"--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", fmt.Sprint(i + 1), "-b", f}
		if o.ReadOnly {
			args = append(args, "--params", "readonly=1")
		}
		adm(args...)
	}
	if len(o.Allow) == 0 {
		adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
	}
	for _, iqn := range o.Allow {
		adm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", iqn)
	}
	if o.CHAP != "" {
		user, secret, _ := strings.Cut(o.CHAP, ":")
		adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
		adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", user)
	}
	if o.MutualCHAP != "" {
		user, secret, _ := strings.Cut(o.MutualCHAP, ":")
		adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
		adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", user, "--outgoing")
	}
	return d
}

// SparseFile creates a sparse file of size bytes in the test's temporary directory and returns its path.
func SparseFile(t testing.TB, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "lun-*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatalf("truncate %s to %d bytes: %v", f.Name(), size, err)
	}
	return f.Name()
}

// NeedCommand fails the test (it does not skip it) when name is not on $PATH: build.sh installs every tool
// the qa suites use, so a missing one is a broken setup.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (build.sh test installs it): %v", name, err)
	}
	return p
}

// Output is the result of Run.
type Output struct {
	Cmd      string // the command line, for messages
	Stdout   string
	Stderr   string
	ExitCode int           // -1 if it did not exit normally (killed, timed out, not started)
	Err      error         // nil when the command exited with status 0
	Elapsed  time.Duration // wall-clock
	TimedOut bool
}

// Combined returns stdout followed by stderr.
func (o *Output) Combined() string { return o.Stdout + o.Stderr }

// Run runs name with args, killing it after timeout, and captures its output. It never fails a test by
// itself: look at Err.
func Run(timeout time.Duration, name string, args ...string) *Output {
	return RunEnv(timeout, nil, name, args...)
}

// RunEnv is Run with extra environment variables ("KEY=VALUE") on top of the test's.
func RunEnv(timeout time.Duration, env []string, name string, args ...string) *Output {
	return RunIn("", timeout, env, name, args...)
}

// RunIn is RunEnv in directory dir ("" for the test's working directory).
func RunIn(dir string, timeout time.Duration, env []string, name string, args ...string) *Output {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	err := cmd.Run()
	o := &Output{
		Cmd:      name + " " + strings.Join(args, " "),
		Stdout:   stdout.String(),
		Stderr:   stderr.String(),
		ExitCode: -1,
		Err:      err,
		Elapsed:  time.Since(begin),
	}
	if cmd.ProcessState != nil {
		o.ExitCode = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		o.TimedOut = true
		o.Err = fmt.Errorf("timed out after %v: %w", timeout, ctx.Err())
	}
	return o
}

// MustRun runs the command like Run and fails the test unless it exits with status 0.
func MustRun(t testing.TB, timeout time.Duration, name string, args ...string) *Output {
	t.Helper()
	o := Run(timeout, name, args...)
	if o.Err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", o.Cmd, o.Err, o.Stdout, o.Stderr)
	}
	return o
}

// lockedBuffer is a bytes.Buffer safe for the writer goroutine of exec and readers in the test.
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
