package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"opensan/gateway/block"
	"opensan/gateway/iscsi"
	"opensan/gateway/scsi"
)

// shutdownGrace is how long in-flight commands get to finish after SIGINT/SIGTERM before they are aborted.
const shutdownGrace = 10 * time.Second

const serveUsage = `usage: gatewayd serve [flags] BACKING...

Exports each BACKING as LUN 0, 1, ... of one iSCSI target and serves it in the foreground until SIGINT or
SIGTERM. A BACKING is a file or block device path, mem:SIZE for a RAM disk (SIZE like 512M, 1G), or
md:MEMBER,MEMBER,... for an md array assembled from those members (see gatewayd array), stopped cleanly at
exit.

flags:
`

type serveOptions struct {
	listen     stringList
	iqn        string
	chap       string
	mutualChap string
	allow      stringList
	readOnly   bool
	direct     bool
	blockSize  int
	logLevel   string
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o serveOptions
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, serveUsage); fs.PrintDefaults() }
	fs.Var(&o.listen, "listen", "`ADDR` to listen on, host:port; repeatable (default 0.0.0.0:3260)")
	fs.StringVar(&o.iqn, "iqn", "", "target `IQN` (default: generated from the host name, printed at start)")
	fs.StringVar(&o.chap, "chap", "", "require CHAP: the initiator authenticates as `USER:SECRET`")
	fs.StringVar(&o.mutualChap, "mutual-chap", "", "mutual CHAP: the target answers as `USER:SECRET` (needs --chap)")
	fs.Var(&o.allow, "allow", "initiator `IQN` allowed to discover and log in; repeatable (default: any)")
	fs.BoolVar(&o.readOnly, "read-only", false, "export every LUN read-only")
	fs.BoolVar(&o.direct, "direct", false, "open files and devices with O_DIRECT")
	fs.IntVar(&o.blockSize, "block-size", 0, "logical block `BYTES`, 512 or 4096 (default: the device's, 512 for files)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("nothing to export: give at least one file, block device or mem:SIZE")
	}
	if len(o.listen) == 0 {
		o.listen = stringList{"0.0.0.0:3260"}
	}
	if o.blockSize != 0 && !block.ValidBlockSize(o.blockSize) {
		return usagef("--block-size %d: want 512 or 4096", o.blockSize)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	chapCfg, err := parseCHAP(o.chap, o.mutualChap)
	if err != nil {
		return err
	}
	if o.iqn == "" {
		o.iqn = defaultIQN()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	target := scsi.NewTarget(o.iqn)
	var devices []block.Device
	// closeDevices stops the arrays (clean superblocks) and closes every backing.
	closeDevices := func() error {
		var errs []error
		for _, d := range devices {
			errs = append(errs, d.Close())
		}
		devices = nil
		return errors.Join(errs...)
	}
	defer closeDevices()
	for i, spec := range fs.Args() {
		dev, err := openBacking(spec, o, log)
		if err != nil {
			return err
		}
		devices = append(devices, dev)
		lun := uint64(i)
		serial := serialFor(o.iqn, lun, spec)
		if a, ok := dev.(*mdArray); ok {
			serial = serialFor(o.iqn, lun, "md:"+formatUUID(a.UUID())) // the same whatever the members' paths
		}
		if err := target.AddLU(lun, scsi.LUConfig{Device: dev, ReadOnly: o.readOnly, Serial: serial}); err != nil {
			return fmt.Errorf("LUN %d (%s): %w", lun, spec, err)
		}
		log.Info("LUN", "lun", lun, "backing", spec, "bytes", dev.Size(), "block_size", dev.LogicalBlockSize(), "read_only", o.readOnly)
	}

	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, addr := range o.listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	var portals []string
	for _, l := range listeners {
		if a := l.Addr().(*net.TCPAddr); !a.IP.IsUnspecified() {
			portals = append(portals, a.String())
		}
	}

	srv := iscsi.NewServer(iscsi.Config{Portals: portals, Logger: log})
	if err := srv.AddTarget(iscsi.TargetConfig{Name: o.iqn, SCSI: target, CHAP: chapCfg, Allow: o.allow}); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "target %s\n", o.iqn)
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		fmt.Fprintf(stderr, "listening on %s\n", l.Addr())
		go func(l net.Listener) { serveErr <- srv.Serve(l) }(l)
	}

	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var failed error
	select {
	case <-sigCtx.Done():
		log.Info("shutting down", "grace", shutdownGrace)
	case failed = <-serveErr:
		log.Error("listener failed", "err", failed)
	}
	stop()
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "err", err)
	}
	// Target.Close flushes every LU, so writes acknowledged without FUA are on disk before we exit.
	if err := target.Close(); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	if err := closeDevices(); err != nil {
		return fmt.Errorf("closing: %w", err)
	}
	if failed != nil && !errors.Is(failed, iscsi.ErrServerClosed) {
		return failed
	}
	log.Info("stopped")
	return nil
}

func parseCHAP(chap, mutual string) (*iscsi.CHAPConfig, error) {
	if chap == "" {
		if mutual != "" {
			return nil, usagef("--mutual-chap needs --chap")
		}
		return nil, nil
	}
	user, secret, ok := strings.Cut(chap, ":")
	if !ok || user == "" || secret == "" {
		return nil, usagef("--chap: want USER:SECRET")
	}
	cfg := &iscsi.CHAPConfig{User: user, Secret: secret}
	if mutual != "" {
		mu, ms, ok := strings.Cut(mutual, ":")
		if !ok || mu == "" || ms == "" {
			return nil, usagef("--mutual-chap: want USER:SECRET")
		}
		if ms == secret {
			return nil, usagef("--mutual-chap: the target's secret must differ from the initiator's")
		}
		cfg.MutualUser, cfg.MutualSecret = mu, ms
	}
	return cfg, nil
}

// openBacking opens a file, a block device, a mem:SIZE RAM disk or an md:MEMBER,... array.
func openBacking(spec string, o serveOptions, log *slog.Logger) (block.Device, error) {
	if size, ok := strings.CutPrefix(spec, "mem:"); ok {
		n, err := parseSize(size)
		if err != nil {
			return nil, usagef("%s: %v", spec, err)
		}
		bs := o.blockSize
		if bs == 0 {
			bs = 512
		}
		if n < int64(bs) {
			return nil, usagef("%s: smaller than one %d-byte block", spec, bs)
		}
		return block.NewMemory(n, bs), nil
	}
	if list, ok := strings.CutPrefix(spec, "md:"); ok {
		paths := strings.Split(list, ",")
		if slices.Contains(paths, "") {
			return nil, usagef("%s: want md:MEMBER,MEMBER,... with no empty member", spec)
		}
		// Members are opened read-write even with --read-only: assembling and stopping an array writes
		// its superblocks; --read-only protects the data the initiators see.
		a, warnings, err := assemble(paths, block.FileOptions{Direct: o.direct, LogicalBlockSize: o.blockSize})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		for _, w := range warnings {
			log.Warn(w, "backing", spec)
		}
		log.Info("array", "backing", spec, "uuid", formatUUID(a.UUID()), "geometry", describeGeometry(a.Array), "in_sync", a.InSync())
		return a, nil
	}
	return block.OpenFile(spec, block.FileOptions{ReadOnly: o.readOnly, Direct: o.direct, LogicalBlockSize: o.blockSize})
}

// parseSize reads "4096", "512K", "64M", "1G", "2T" (binary units) as bytes.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	return n * mult, nil
}

// defaultIQN names the target after the host, so it stays the same across restarts.
func defaultIQN() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		}
	}
	return "iqn.2026-11.org.opensan:" + b.String() + ".target0"
}

// serialFor derives a unit serial number that is stable for the same target, LUN and backing path.
func serialFor(iqn string, lun uint64, spec string) string {
	if abs, err := filepath.Abs(spec); err == nil && !strings.HasPrefix(spec, "mem:") && !strings.HasPrefix(spec, "md:") {
		spec = abs
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%s", iqn, lun, spec)))
	return hex.EncodeToString(sum[:8])
}
