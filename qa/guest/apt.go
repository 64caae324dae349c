package guest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// debPkg is one Debian package at the version apt would install.
type debPkg struct {
	Name, Version string
}

func (p debPkg) String() string { return p.Name + "=" + p.Version }

// parseCandidates reads `apt-cache policy PKG...` output and returns each package's candidate version.
// Packages apt does not know, or knows without a candidate ("(none)"), are missing from the map.
func parseCandidates(out string) (map[string]string, error) {
	cands := map[string]string{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, ok := strings.CutSuffix(strings.TrimSpace(line), ":")
			if !ok || name == "" || strings.ContainsAny(name, " \t") {
				return nil, fmt.Errorf("apt-cache policy line %d: %q is neither a package header nor indented", n, line)
			}
			cur = name
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
			if cur == "" {
				return nil, fmt.Errorf("apt-cache policy line %d: Candidate before any package header", n)
			}
			if v = strings.TrimSpace(v); v != "" && v != "(none)" {
				cands[cur] = v
			}
		}
	}
	return cands, sc.Err()
}

// parseDepends reads `apt-cache depends PKG` output and returns the packages named on Depends and
// PreDepends lines, in order and without duplicates. Virtual packages ("<debconf-2.0>") and the
// indented lines listing their providers are skipped.
func parseDepends(out string) ([]string, error) {
	var deps []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if t == "" || !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "|") {
			continue // the package header, or an empty line
		}
		t = strings.TrimPrefix(t, "|")
		kind, name, ok := strings.Cut(t, ":")
		if !ok {
			continue // a provider of a virtual package: "    debconf"
		}
		name = strings.TrimSpace(name)
		switch kind {
		case "Depends", "PreDepends":
		case "Recommends", "Suggests", "Conflicts", "Breaks", "Replaces", "Enhances":
			continue
		default:
			return nil, fmt.Errorf("apt-cache depends line %d: unknown relation %q", n, kind)
		}
		if name == "" || strings.HasPrefix(name, "<") {
			continue
		}
		if !seen[name] {
			seen[name] = true
			deps = append(deps, name)
		}
	}
	return deps, sc.Err()
}

// aptUpdate runs `apt-get update` at most once per process, when a package has no candidate (a fresh
// container has empty lists).
var aptUpdate struct {
	once sync.Once
	err  error
}

func runCmd(ctx context.Context, dir string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// candidates returns the candidate version of every package in names, running apt-get update once if
// some have none.
func candidates(ctx context.Context, names []string) ([]debPkg, error) {
	lookup := func() (map[string]string, error) {
		out, err := runCmd(ctx, "", "apt-cache", append([]string{"policy"}, names...)...)
		if err != nil {
			return nil, err
		}
		return parseCandidates(out)
	}
	c, err := lookup()
	if err != nil {
		return nil, err
	}
	if len(c) < len(uniq(names)) {
		aptUpdate.once.Do(func() { _, aptUpdate.err = runCmd(ctx, "", "apt-get", "update", "-qq") })
		if aptUpdate.err != nil {
			return nil, aptUpdate.err
		}
		if c, err = lookup(); err != nil {
			return nil, err
		}
	}
	var pkgs []debPkg
	for _, n := range uniq(names) {
		v, ok := c[n]
		if !ok {
			return nil, fmt.Errorf("Debian package %s has no installation candidate (apt-cache policy %s)", n, n)
		}
		pkgs = append(pkgs, debPkg{n, v})
	}
	return pkgs, nil
}

func uniq(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// depends returns the Depends and PreDepends of package name.
func depends(ctx context.Context, name string) ([]string, error) {
	out, err := runCmd(ctx, "", "apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances", name)
	if err != nil {
		return nil, err
	}
	return parseDepends(out)
}

// download fetches p into dir (a cache shared by builds) unless a .deb of that version is already there,
// and returns the file's path. apt names the file NAME_VERSION_ARCH.deb with ':' escaped as "%3a".
func download(ctx context.Context, dir string, p debPkg) (string, error) {
	glob := filepath.Join(dir, p.Name+"_"+strings.ReplaceAll(p.Version, ":", "%3a")+"_*.deb")
	if m, _ := filepath.Glob(glob); len(m) == 1 {
		return m[0], nil
	}
	if _, err := runCmd(ctx, dir, "apt-get", "download", "-qq", p.String()); err != nil {
		return "", err
	}
	m, _ := filepath.Glob(glob)
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s: expected one file matching %s, found %d", p, glob, len(m))
	}
	return m[0], nil
}

// extract unpacks deb into a cached directory next to it (DEB.d) and returns that directory. A half
// finished extraction is never used: it happens in a temporary directory renamed into place.
func extract(ctx context.Context, deb string) (string, error) {
	dst := strings.TrimSuffix(deb, ".deb") + ".d"
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(deb), ".extract-")
	if err != nil {
		return "", err
	}
	if _, err := runCmd(ctx, "", "dpkg-deb", "-x", deb, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return dst, nil
}
