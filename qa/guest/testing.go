//go:build qa

package guest

import (
	"context"
	"testing"
	"time"
)

// BuildTimeout bounds Build in tests: an uncached build downloads about 75 MB of packages and unpacks the
// kernel's 400 MB of modules.
const BuildTimeout = 4 * time.Minute

// MustBuild builds (or finds in the cache) the image for cfg and fails the test on error.
func MustBuild(t testing.TB, cfg Config) *Image {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	begin := time.Now()
	im, err := Build(ctx, cfg)
	if err != nil {
		t.Fatalf("building the guest image: %v", err)
	}
	t.Logf("guest image ready in %v: kernel %s, modules %v", time.Since(begin).Round(time.Millisecond), im.KernelVersion, im.Modules)
	return im
}

// MustStart boots im, streams its console into the test log (prefixed "guest: ") and kills QEMU when the
// test ends.
func MustStart(t testing.TB, im *Image, rc RunConfig) *Machine {
	t.Helper()
	if rc.Console == nil {
		rc.Console = func(line string) { t.Logf("guest: %s", line) }
	}
	m, err := im.Start(context.Background(), rc)
	if err != nil {
		t.Fatalf("starting the guest: %v", err)
	}
	t.Cleanup(func() {
		m.Kill()
		m.Wait()
	})
	return m
}

// MustRun boots im, runs rc.Script and returns the result; it fails the test when the guest never
// reported the script's exit (timeout, panic, QEMU error). The exit code is the caller's to check.
func MustRun(t testing.TB, im *Image, rc RunConfig) *Result {
	t.Helper()
	m := MustStart(t, im, rc)
	r, err := m.Wait()
	if err != nil {
		t.Fatalf("guest: %v (after %v)", err, r.Elapsed.Round(time.Millisecond))
	}
	t.Logf("guest script exited with status %d after %v", r.ExitCode, r.Elapsed.Round(time.Millisecond))
	return r
}
