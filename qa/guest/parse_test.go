package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	b := []byte("license=GPL\x00depends=libiscsi,scsi_transport_iscsi,libiscsi-tcp\x00\x00softdep=pre: crc32c crct10dif post: foo\x00name=x\x00")
	mi, err := parseModinfo(b)
	if err != nil {
		t.Fatal(err)
	}
	want := modinfo{Depends: []string{"libiscsi", "scsi_transport_iscsi", "libiscsi_tcp"}, SoftdepPre: []string{"crc32c", "crct10dif"}}
	if !reflect.DeepEqual(mi, want) {
		t.Errorf("got %+v, want %+v", mi, want)
	}
	mi, err = parseModinfo([]byte("depends=\x00"))
	if err != nil || len(mi.Depends) != 0 {
		t.Errorf("empty depends: %+v, %v", mi, err)
	}
	_, err = parseModinfo([]byte("license=GPL\x00garbage\x00"))
	if err == nil || !strings.Contains(err.Error(), "byte 12") {
		t.Errorf("entry without '=': error %v, want one naming byte 12", err)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00softdep=pre: c post: d\x00"))
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := parseModinfo(b)
		if err != nil {
			return
		}
		for _, d := range append(mi.Depends, mi.SoftdepPre...) {
			if d == "" || strings.Contains(d, "-") {
				t.Errorf("bad dependency name %q", d)
			}
		}
	})
}

func TestParseModulesAlias(t *testing.T) {
	a, err := parseModulesAlias("# Aliases extracted from modules themselves.\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias pci:v00001AF4d* virtio_pci\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"crypto_crc32c": {"crc32c_generic"}, "crc32c": {"crc32c_intel", "crc32c_generic"}}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got %v, want %v", a, want)
	}
	if _, err := parseModulesAlias("alias x\n"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("short line: error %v, want one naming line 1", err)
	}
}

func FuzzParseModulesAlias(f *testing.F) {
	f.Add("alias crc32c crc32c_generic\n# c\n")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseModulesAlias(s)
		if err != nil {
			return
		}
		for k, v := range a {
			if k == "" || len(v) == 0 {
				t.Errorf("alias %q -> %v", k, v)
			}
		}
	})
}

// fakeTree is a module tree whose .modinfo comes from a map instead of files.
func fakeTree(infos map[string]modinfo, builtin []string, aliases map[string][]string) *moduleTree {
	t := &moduleTree{dir: "/fake", paths: map[string]string{}, builtin: map[string]bool{}, aliases: aliases}
	for name := range infos {
		t.paths[name] = "kernel/" + name + ".ko"
	}
	for _, b := range builtin {
		t.builtin[b] = true
	}
	t.info = func(rel string) (modinfo, error) {
		return infos[moduleName(rel)], nil
	}
	return t
}

func TestLoadOrder(t *testing.T) {
	tree := fakeTree(map[string]modinfo{
		"iscsi_tcp":            {Depends: []string{"libiscsi_tcp", "libiscsi", "scsi_transport_iscsi"}},
		"libiscsi_tcp":         {Depends: []string{"libiscsi"}},
		"libiscsi":             {Depends: []string{"scsi_mod", "scsi_transport_iscsi"}},
		"scsi_transport_iscsi": {Depends: []string{"scsi_mod"}},
		"scsi_mod":             {},
		"ext4":                 {Depends: []string{"jbd2", "crc16"}, SoftdepPre: []string{"crc32c", "nonexistent"}},
		"jbd2":                 {},
		"crc32c_generic":       {},
		"crc32c_intel":         {},
		"loop_a":               {Depends: []string{"loop_b"}},
		"loop_b":               {Depends: []string{"loop_a"}},
	}, []string{"crc16"}, map[string][]string{"crc32c": {"crc32c_intel", "crc32c_generic"}})

	got, err := tree.loadOrder([]string{"iscsi-tcp", "ext4", "scsi_mod"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"scsi_mod", "scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp", "jbd2", "crc32c_generic", "ext4"}
	for i := range want {
		want[i] = "kernel/" + want[i] + ".ko"
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order\n%v\nwant\n%v", got, want)
	}
	if _, err := tree.loadOrder([]string{"nosuch"}); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown module: error %v", err)
	}
	if _, err := tree.loadOrder([]string{"loop_a"}); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("dependency loop: error %v", err)
	}
	if got, err := tree.loadOrder([]string{"crc16"}); err != nil || len(got) != 0 {
		t.Errorf("built-in module: %v, %v; want nothing to load", got, err)
	}
}

const policyOut = `open-iscsi:
  Installed: (none)
  Candidate: 2.1.8-1+deb12u1
  Version table:
     2.1.8-1+deb12u1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
busybox-static:
  Installed: 1:1.35.0-4+deb12u1+b1
  Candidate: 1:1.35.0-4+deb12u1+b1
gone:
  Installed: (none)
  Candidate: (none)
`

func TestParseCandidates(t *testing.T) {
	c, err := parseCandidates(policyOut)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"open-iscsi": "2.1.8-1+deb12u1", "busybox-static": "1:1.35.0-4+deb12u1+b1"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %v, want %v", c, want)
	}
	if _, err := parseCandidates("not a header\n"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("garbage: error %v, want one naming line 1", err)
	}
}

func FuzzParseCandidates(f *testing.F) {
	f.Add(policyOut)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCandidates(s)
		if err != nil {
			return
		}
		for k, v := range c {
			if k == "" || v == "" || v == "(none)" {
				t.Errorf("candidate %q=%q", k, v)
			}
		}
	})
}

const dependsOut = `open-iscsi
 |PreDepends: debconf
  PreDepends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libc6
  Depends: libisns0
  Depends: libsystemd0
    libelogind0
  Depends: libc6
  Recommends: finalrd
`

func TestParseDepends(t *testing.T) {
	d, err := parseDepends(dependsOut)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"debconf", "libc6", "libisns0", "libsystemd0"}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("got %v, want %v", d, want)
	}
	if _, err := parseDepends("x\n  Frobs: y\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("unknown relation: error %v, want one naming line 2", err)
	}
}

func FuzzParseDepends(f *testing.F) {
	f.Add(dependsOut)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDepends(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, n := range d {
			if n == "" || strings.HasPrefix(n, "<") || seen[n] {
				t.Errorf("bad or repeated dependency %q in %v", n, d)
			}
			seen[n] = true
		}
	})
}

func TestParseConsole(t *testing.T) {
	console := "[    1.0] booting\r\nGUEST-EXIT-other 0\nGUEST-BEGIN-tok\r\nline one\r\nGUEST-EXIT-tok-fake 0\nline two\n[   2.5] sd 0:0:0:0: noise GUEST-EXIT-tok 42\r\n[   2.6] reboot: Power down\n"
	out, code, err := parseConsole(console, "tok")
	if err != nil || code != 42 {
		t.Fatalf("code %d, err %v; want 42", code, err)
	}
	if want := "line one\nGUEST-EXIT-tok-fake 0\nline two\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if _, _, err := parseConsole("GUEST-BEGIN-tok\nKernel panic\n", "tok"); !errors.Is(err, ErrNoMarker) {
		t.Errorf("no marker: error %v, want ErrNoMarker", err)
	}
	if _, _, err := parseConsole("GUEST-EXIT-tok 256\n", "tok"); err == nil {
		t.Error("status 256 accepted")
	}
}

func FuzzParseConsole(f *testing.F) {
	f.Add("GUEST-BEGIN-t\nx\nGUEST-EXIT-t 3\n")
	f.Add("GUEST-EXIT-t\n")
	f.Fuzz(func(t *testing.T, s string) {
		out, code, err := parseConsole(s, "t")
		if err == nil && (code < 0 || code > 255) {
			t.Errorf("status %d accepted", code)
		}
		if len(out) > len(s)+1 {
			t.Errorf("output longer than the console")
		}
	})
}

func TestGuestPath(t *testing.T) {
	for in, want := range map[string]string{
		"sbin/iscsid": "usr/sbin/iscsid", "/lib/x86_64-linux-gnu/libc.so.6": "usr/lib/x86_64-linux-gnu/libc.so.6",
		"lib64/ld-linux-x86-64.so.2": "usr/lib64/ld-linux-x86-64.so.2", "etc/iscsi/iscsid.conf": "etc/iscsi/iscsid.conf",
		"usr/bin/iscsiadm": "usr/bin/iscsiadm", "libexec/x": "libexec/x", "bin": "usr/bin",
	} {
		if got := guestPath(in); got != want {
			t.Errorf("guestPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	os.MkdirAll(lib, 0o755)
	os.WriteFile(filepath.Join(lib, "libx.so.1.2"), []byte("x"), 0o644)
	os.Symlink("libx.so.1.2", filepath.Join(lib, "libx.so.1"))                         // relative
	os.Symlink("/usr/lib/x86_64-linux-gnu/libx.so.1", filepath.Join(lib, "libabs.so")) // absolute, inside root
	os.Symlink("loop2", filepath.Join(lib, "loop1"))
	os.Symlink("loop1", filepath.Join(lib, "loop2"))
	for name, ok := range map[string]bool{"libx.so.1": true, "libabs.so": true, "loop1": false, "missing": false} {
		p, got := resolveIn(root, "usr/lib/x86_64-linux-gnu/"+name)
		if got != ok || ok && p != filepath.Join(lib, "libx.so.1.2") {
			t.Errorf("%s: %q, %v; want found=%v", name, p, got, ok)
		}
	}
}

// TestELFNeeds reads a dynamically linked host binary; the host is Debian, like the guest.
func TestELFNeeds(t *testing.T) {
	needed, interp, isELF, err := elfNeeds("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	if !isELF || interp != "/lib64/ld-linux-x86-64.so.2" || !strings.Contains(fmt.Sprint(needed), "libc.so.6") {
		t.Errorf("/bin/ls: elf %v, interp %q, needed %v", isELF, interp, needed)
	}
	script := filepath.Join(t.TempDir(), "s")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	if _, _, isELF, err := elfNeeds(script); isELF || err != nil {
		t.Errorf("script: elf %v, err %v; want not ELF, no error", isELF, err)
	}
}
