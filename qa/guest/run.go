package guest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Disk is a host file attached to the guest as a disk.
type Disk struct {
	Path string
	// Format is QEMU's image format; empty means "raw".
	Format string
	// Bus is "virtio-blk" (default, /dev/vdX in attach order) or "virtio-scsi" (/dev/sdX, one shared
	// controller).
	Bus string
	// Serial is the disk's serial number (/dev/disk/by-id, /sys/block/X/serial for virtio-blk).
	Serial   string
	ReadOnly bool
}

// RunConfig describes one boot.
type RunConfig struct {
	// Script is run by busybox sh as root after the guest is up; its exit status is Result.ExitCode.
	// Its stdout and stderr go to the console (Result.Output).
	Script string
	// Files are added to the guest for this boot only (a second, small initramfs).
	Files []File
	// Disks are attached in order.
	Disks []Disk
	// NICs is the number of virtio network cards, each on its own QEMU user network with the host at
	// 10.0.2.2; only eth0 is configured by /init. 0 means 1. Their QEMU ids are n0, n1, ... (for the
	// monitor's set_link).
	NICs int
	// MemoryMB defaults to 1024, CPUs to 1.
	MemoryMB, CPUs int
	// Timeout bounds the whole boot, from QEMU's start to its exit; 0 means 3 minutes.
	Timeout time.Duration
	// Console, if set, receives every console line (without the line end) as it arrives.
	Console func(line string)
	// KernelArgs are appended to the kernel command line, QEMUArgs to QEMU's.
	KernelArgs, QEMUArgs []string
}

// Result is the outcome of a boot.
type Result struct {
	// ExitCode is the script's exit status, or the init's own (125 a module did not load, 126 the
	// network did not come up, 127 no script).
	ExitCode int
	// Output is what the console showed between the start of the script and its exit marker.
	Output string
	// Console is everything the serial console showed.
	Console string
	Elapsed time.Duration
}

// Machine is a running guest.
type Machine struct {
	cmd     *exec.Cmd
	dir     string
	monitor string // HMP unix socket
	token   string
	begin   time.Time
	timeout time.Duration

	console  bytes.Buffer // guarded by mu
	mu       sync.Mutex
	exitSeen chan struct{} // closed when the exit marker went by
	readDone chan struct{} // closed when the console reader has finished
	done     chan struct{} // closed when QEMU has been waited for
	waitErr  error
	timedOut bool

	once   sync.Once
	result *Result
	err    error
}

// Start boots im with rc and returns at once; call Wait for the result. ctx cancels the boot.
func (im *Image) Start(ctx context.Context, rc RunConfig) (*Machine, error) {
	if rc.MemoryMB == 0 {
		rc.MemoryMB = 1024
	}
	if rc.CPUs == 0 {
		rc.CPUs = 1
	}
	if rc.NICs == 0 {
		rc.NICs = 1
	}
	if rc.Timeout == 0 {
		rc.Timeout = 3 * time.Minute
	}
	dir, err := os.MkdirTemp("", "opensan-guest-run-")
	if err != nil {
		return nil, err
	}
	var tok [8]byte
	rand.Read(tok[:])
	m := &Machine{dir: dir, token: hex.EncodeToString(tok[:]), monitor: filepath.Join(dir, "monitor.sock"),
		exitSeen: make(chan struct{}), readDone: make(chan struct{}), done: make(chan struct{}),
		timeout: rc.Timeout}

	// The per-boot initramfs: the cached image followed by a second gzip'd cpio with the script, the
	// token and the caller's files. The kernel unpacks concatenated archives in order.
	initrd := filepath.Join(dir, "initrd.gz")
	if err := writeRunInitrd(initrd, im.Initrd, m.token, rc); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	args := []string{
		"-nodefaults", "-no-user-config", "-machine", "pc,accel=tcg", "-cpu", "max",
		"-m", strconv.Itoa(rc.MemoryMB), "-smp", strconv.Itoa(rc.CPUs),
		"-display", "none", "-no-reboot", "-serial", "stdio",
		"-monitor", "unix:" + m.monitor + ",server=on,wait=off",
		"-kernel", im.Kernel, "-initrd", initrd,
		"-append", strings.Join(append([]string{"console=ttyS0", "quiet", "panic=-1", "rdinit=/init"}, rc.KernelArgs...), " "),
	}
	for i := 0; i < rc.NICs; i++ {
		args = append(args, "-netdev", fmt.Sprintf("user,id=n%d", i), "-device", fmt.Sprintf("virtio-net-pci,netdev=n%d", i))
	}
	scsi := false
	for i, d := range rc.Disks {
		format := d.Format
		if format == "" {
			format = "raw"
		}
		drive := fmt.Sprintf("if=none,id=d%d,file=%s,format=%s,cache=none,aio=threads", i, d.Path, format)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive)
		serial := ""
		if d.Serial != "" {
			serial = ",serial=" + d.Serial
		}
		switch d.Bus {
		case "", "virtio-blk":
			args = append(args, "-device", fmt.Sprintf("virtio-blk-pci,drive=d%d%s", i, serial))
		case "virtio-scsi":
			if !scsi {
				args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
				scsi = true
			}
			args = append(args, "-device", fmt.Sprintf("scsi-hd,drive=d%d,bus=scsi0.0%s", i, serial))
		default:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("disk %d (%s): unknown bus %q", i, d.Path, d.Bus)
		}
	}
	args = append(args, rc.QEMUArgs...)

	m.cmd = exec.Command("qemu-system-x86_64", args...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	m.cmd.Stderr = &stderr
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m.begin = time.Now()
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("qemu-system-x86_64 (Debian package qemu-system-x86): %w", err)
	}
	go m.readConsole(out, rc.Console)
	go func() {
		<-m.readDone
		m.waitErr = m.cmd.Wait()
		if m.waitErr != nil && stderr.Len() > 0 {
			m.waitErr = fmt.Errorf("%w: %s", m.waitErr, strings.TrimSpace(stderr.String()))
		}
		close(m.done)
	}()
	go func() {
		timer := time.NewTimer(rc.Timeout)
		defer timer.Stop()
		select {
		case <-m.done:
			return
		case <-m.exitSeen:
			// poweroff -f takes well under a second; do not wait for a hung one.
			select {
			case <-m.done:
			case <-time.After(15 * time.Second):
				m.Kill()
			}
		case <-timer.C:
			m.mu.Lock()
			m.timedOut = true
			m.mu.Unlock()
			m.Kill()
		case <-ctx.Done():
			m.Kill()
		}
	}()
	return m, nil
}

// readConsole copies QEMU's serial output into the buffer and to fn, line by line.
func (m *Machine) readConsole(r io.Reader, fn func(string)) {
	defer close(m.readDone)
	exitMarker := "GUEST-EXIT-" + m.token + " "
	br := bufio.NewReader(r)
	seen := false
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			m.mu.Lock()
			m.console.WriteString(line)
			m.mu.Unlock()
			clean := strings.TrimRight(line, "\r\n")
			if fn != nil {
				fn(clean)
			}
			if !seen && strings.Contains(clean, exitMarker) {
				seen = true
				close(m.exitSeen)
			}
		}
		if err != nil {
			return
		}
	}
}

// Kill stops QEMU at once. Wait still returns what the console showed.
func (m *Machine) Kill() {
	if m.cmd.Process != nil {
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Console returns what the console showed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// Wait waits for QEMU to exit and returns the script's result. The error is not nil when the exit marker
// never appeared (timeout, kernel panic, QEMU failure); Result is then still filled with the console.
func (m *Machine) Wait() (*Result, error) {
	m.once.Do(func() {
		<-m.done
		os.RemoveAll(m.dir)
		console := m.Console()
		r := &Result{ExitCode: -1, Console: console, Elapsed: time.Since(m.begin)}
		out, code, err := parseConsole(console, m.token)
		r.Output = out
		if err == nil {
			r.ExitCode = code
		} else {
			m.mu.Lock()
			timedOut := m.timedOut
			m.mu.Unlock()
			switch {
			case timedOut:
				err = fmt.Errorf("guest timed out after %v: %w", m.timeout, err)
			case m.waitErr != nil:
				err = fmt.Errorf("qemu: %v: %w", m.waitErr, err)
			}
		}
		m.result, m.err = r, err
	})
	return m.result, m.err
}

// Monitor runs one command on QEMU's human monitor (HMP), for example "set_link n0 off" or
// "device_del d1", and returns its output.
func (m *Machine) Monitor(command string) (string, error) {
	c, err := net.DialTimeout("unix", m.monitor, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("qemu monitor: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	readPrompt := func() (string, error) {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "(qemu) ") {
			ch, err := br.ReadByte()
			if err != nil {
				return b.String(), fmt.Errorf("qemu monitor: %w", err)
			}
			b.WriteByte(ch)
		}
		return strings.TrimSuffix(b.String(), "(qemu) "), nil
	}
	if _, err := readPrompt(); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	out, err := readPrompt()
	// HMP echoes the command line (with terminal escapes) before its output.
	if i := strings.Index(out, "\n"); i >= 0 {
		out = out[i+1:]
	}
	return strings.ReplaceAll(out, "\r", ""), err
}

// parseConsole finds the script's output and exit status in the console text: the output lies between
// the line holding "GUEST-BEGIN-TOKEN" and the line holding "GUEST-EXIT-TOKEN CODE".
func parseConsole(console, token string) (output string, code int, err error) {
	begin, exit := "GUEST-BEGIN-"+token, "GUEST-EXIT-"+token+" "
	var out strings.Builder
	inScript := false
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, exit); i >= 0 {
			f := strings.Fields(line[i+len(exit):])
			if len(f) == 0 {
				return out.String(), -1, fmt.Errorf("exit marker without a status: %q", line)
			}
			code, err := strconv.Atoi(f[0])
			if err != nil || code < 0 || code > 255 {
				return out.String(), -1, fmt.Errorf("exit marker with a bad status: %q", line)
			}
			return out.String(), code, nil
		}
		if inScript {
			out.WriteString(line)
			out.WriteByte('\n')
		} else if strings.Contains(line, begin) {
			inScript = true
		}
	}
	return out.String(), -1, ErrNoMarker
}

// writeRunInitrd writes base followed by a gzip'd cpio holding /guest/script, /guest/token and files.
func writeRunInitrd(dst, base, token string, rc RunConfig) (err error) {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	in, err := os.Open(base)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	in.Close()
	if err != nil {
		return err
	}
	files := append([]File{
		{Path: "/guest/script", Mode: 0o755, Data: []byte(rc.Script)},
		{Path: "/guest/token", Data: []byte(token + "\n")},
	}, rc.Files...)
	zw := gzip.NewWriter(out)
	cw := newCPIOWriter(zw)
	made := map[string]bool{}
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "/") {
			return fmt.Errorf("guest file %q: path must be absolute", f.Path)
		}
		rel := guestPath(f.Path)
		// Parent directories: the kernel's unpacker does not create them. Ones that exist are fine.
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if !made[d] {
				made[d] = true
				if err := cw.Dir(d, 0o755); err != nil {
					return err
				}
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := cw.File(rel, mode, f.Data); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// ErrNoMarker is wrapped by Wait's error when the guest never reported the script's exit.
var ErrNoMarker = errors.New("guest: the console never showed the exit marker")
