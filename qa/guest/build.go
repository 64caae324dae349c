// Package guest builds and boots a small Linux guest under QEMU for end-to-end tests that need a real
// kernel: the kernel's iSCSI initiator, md, device mapper, multipath.
//
// Build downloads Debian's kernel, busybox-static and the userland packages a test names (apt-get
// download; no other network is needed), takes each package's files plus the shared libraries its ELF
// binaries need, the kernel modules the test names plus their dependencies, and packs them into a gzip'd
// newc initramfs with a busybox /init. Kernel and initramfs are cached under a directory keyed by a hash
// of every input, so only the first build pays (a few seconds, most of it unpacking the kernel package).
//
// Image.Start boots the image in QEMU (TCG: no KVM needed) with user-mode networking, in which the host's
// loopback is 10.0.2.2, runs the caller's shell script as root and reports its exit status.
//
// In a test (build tag qa), for example an md interop test:
//
//	im := guest.MustBuild(t, guest.Config{Packages: []string{"mdadm"}, Modules: []string{"raid456", "raid1"}})
//	r := guest.MustRun(t, im, guest.RunConfig{
//		Disks:  []guest.Disk{{Path: a}, {Path: b}, {Path: c}}, // /dev/vda, /dev/vdb, /dev/vdc
//		Script: "mdadm --create /dev/md0 --run --level=5 --raid-devices=3 /dev/vd[abc] && ...",
//	})
//	if r.ExitCode != 0 { t.Fatalf(...) }
//
// Machine.Monitor drives QEMU's monitor while the script runs (set_link nN off for multipath, device_del
// for hot removal). Host packages needed: qemu-system-x86 (qemu-system-x86_64), kmod (depmod), dpkg and apt.
package guest

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// formatVersion changes whenever the layout of the built image changes, to invalidate old cache entries.
const formatVersion = "guest-image-v2"

// baseModules are always loaded: the virtio devices Run attaches (network, disks).
var baseModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "sd_mod"}

// File is a file put into the guest's root file system.
type File struct {
	Path string      // absolute path in the guest
	Mode fs.FileMode // permission bits; 0 means 0644
	Data []byte
}

// Config says what goes into an image.
type Config struct {
	// Packages are Debian packages whose files are copied into the guest (documentation left out), for
	// example "open-iscsi", "e2fsprogs", "mdadm", "lvm2". Shared libraries their binaries need come from
	// their lib* dependencies (downloaded too) or, failing that, from the host, which is the same Debian.
	Packages []string
	// Modules are kernel modules loaded at boot, in this order, each after its dependencies, for example
	// "iscsi_tcp", "ext4", "raid456", "dm_mod". The virtio and sd_mod modules are always loaded.
	Modules []string
	// Files are extra files, written last (they replace package files of the same path).
	Files []File
	// CacheDir holds downloads and built images. Empty: $OPENSAN_GUEST_CACHE, else qa/.cache/guest in
	// the module containing the working directory, else the user cache directory.
	CacheDir string
	// Logf, if set, receives progress messages.
	Logf func(format string, args ...any)
}

// Image is a built guest: a kernel and an initramfs.
type Image struct {
	Kernel        string // path of the bzImage
	Initrd        string // path of the gzip'd cpio
	KernelVersion string // uname -r in the guest, "6.1.0-56-amd64"
	Packages      []string
	Modules       []string // module files loaded at boot, relative to /lib/modules/KVER, in order
}

// manifest is written next to a cached image, for humans and for Build to reload it.
type manifest struct {
	KernelVersion string
	Packages      []string
	Modules       []string
}

func (c *Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// DefaultCacheDir is where Build caches when Config.CacheDir is empty.
func DefaultCacheDir() string {
	if d := os.Getenv("OPENSAN_GUEST_CACHE"); d != "" {
		return d
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return filepath.Join(dir, "qa", ".cache", "guest")
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "opensan-guest")
	}
	return filepath.Join(os.TempDir(), "opensan-guest")
}

// Build returns the image for cfg, building it unless the cache has it. Builds of the same cache
// directory are serialised with a lock file, so parallel test packages share the work.
func Build(ctx context.Context, cfg Config) (*Image, error) {
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	debs := filepath.Join(cfg.CacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	// Resolve every package to a version: these versions, the module list, the extra files and the
	// format version make the cache key.
	kernelDeps, err := depends(ctx, "linux-image-amd64")
	if err != nil {
		return nil, err
	}
	kernelPkg := ""
	for _, d := range kernelDeps {
		if strings.HasPrefix(d, "linux-image-") {
			kernelPkg = d
		}
	}
	if kernelPkg == "" {
		return nil, fmt.Errorf("linux-image-amd64 depends on no linux-image-* package (depends: %v)", kernelDeps)
	}
	var libPkgs []string
	for _, p := range cfg.Packages {
		deps, err := depends(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "lib") {
				libPkgs = append(libPkgs, d)
			}
		}
	}
	names := append([]string{kernelPkg, "busybox-static"}, cfg.Packages...)
	pkgs, err := candidates(ctx, append(names, libPkgs...))
	if err != nil {
		return nil, err
	}
	modules := append(append([]string(nil), baseModules...), cfg.Modules...)

	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", formatVersion, initScript)
	for _, p := range pkgs {
		fmt.Fprintf(h, "pkg %s\n", p)
	}
	fmt.Fprintf(h, "userland %q\nmodules %q\n", cfg.Packages, modules)
	for _, f := range cfg.Files {
		fmt.Fprintf(h, "file %s %o %d\n", f.Path, f.Mode, len(f.Data))
		h.Write(f.Data)
	}
	key := hex.EncodeToString(h.Sum(nil))[:20]
	dir := filepath.Join(cfg.CacheDir, "images", key)
	if im, err := loadImage(dir); err == nil {
		cfg.logf("guest image %s cached (kernel %s)", dir, im.KernelVersion)
		return im, nil
	}

	cfg.logf("building guest image %s from %v", dir, pkgs)
	trees := map[string]string{}
	for _, p := range pkgs {
		deb, err := download(ctx, debs, p)
		if err != nil {
			return nil, err
		}
		if trees[p.Name], err = extract(ctx, deb); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	b := &builder{root: filepath.Join(tmp, "root"), trees: trees}
	var libRoots []string
	for _, p := range uniq(libPkgs) {
		libRoots = append(libRoots, trees[p])
	}
	for _, p := range cfg.Packages {
		libRoots = append(libRoots, trees[p])
	}
	b.libs = libFinder{roots: libRoots}
	im, err := b.build(ctx, trees[kernelPkg], trees["busybox-static"], cfg, modules)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "root", "boot-kernel"), filepath.Join(tmp, "vmlinuz")); err != nil {
		return nil, err
	}
	if err := writeInitrd(filepath.Join(tmp, "initrd.gz"), b.root); err != nil {
		return nil, err
	}
	mf, _ := json.MarshalIndent(manifest{im.KernelVersion, cfg.Packages, im.Modules}, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), mf, 0o644); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(b.root); err != nil {
		return nil, err
	}
	os.RemoveAll(dir) // a broken earlier attempt
	// MkdirTemp made the directory 0700; other users of the cache read it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return loadImage(dir)
}

func loadImage(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s/manifest.json: %w", dir, err)
	}
	im := &Image{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz"),
		KernelVersion: m.KernelVersion, Packages: m.Packages, Modules: m.Modules}
	for _, p := range []string{im.Kernel, im.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return im, nil
}

// lockDir takes an exclusive flock on dir/.lock and returns its release.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// builder assembles the guest's root file system in a directory. The layout is merged-/usr like the host:
// /bin, /sbin, /lib and /lib64 are symlinks into /usr, and package files under them are moved there.
type builder struct {
	root  string
	trees map[string]string // package name -> extracted tree
	libs  libFinder
	elfs  []string // guest paths of ELF files whose libraries must be present
	have  map[string]bool
}

// guestPath maps a path from a package (relative, non-merged layout) to the merged layout.
func guestPath(rel string) string {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return "usr/" + rel
		}
	}
	return rel
}

// skipped reports package paths that a test guest never needs.
func skipped(rel string) bool {
	for _, p := range []string{"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
		"usr/share/lintian", "usr/share/bug", "lib/systemd", "usr/lib/systemd", "etc/init.d", "etc/cron.d"} {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

func (b *builder) build(ctx context.Context, kernelTree, busyboxTree string, cfg Config, modules []string) (*Image, error) {
	b.have = map[string]bool{}
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "dev", "proc",
		"sys", "run", "tmp", "etc/guest", "var/lib", "root", "mnt", "guest"} {
		if err := os.MkdirAll(filepath.Join(b.root, d), 0o755); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+d, filepath.Join(b.root, d)); err != nil {
			return nil, err
		}
	}
	if err := os.Symlink("../run/lock", filepath.Join(b.root, "var/lock")); err != nil {
		return nil, err
	}
	if err := b.copyFile(filepath.Join(busyboxTree, "bin/busybox"), "usr/bin/busybox", 0o755); err != nil {
		return nil, fmt.Errorf("busybox-static: %w", err)
	}
	for _, p := range cfg.Packages {
		if err := b.copyPackage(b.trees[p]); err != nil {
			return nil, fmt.Errorf("package %s: %w", p, err)
		}
	}
	if err := b.resolveLibs(); err != nil {
		return nil, err
	}

	// Kernel and modules.
	mods, err := filepath.Glob(filepath.Join(kernelTree, "lib/modules/*"))
	if err != nil || len(mods) != 1 {
		return nil, fmt.Errorf("kernel package: expected one lib/modules/KVER directory, found %v", mods)
	}
	kver := filepath.Base(mods[0])
	if err := b.copyFile(filepath.Join(kernelTree, "boot", "vmlinuz-"+kver), "boot-kernel", 0o644); err != nil {
		return nil, err
	}
	// The package ships no modules.dep/modules.alias (its postinst makes them); softdeps and crypto
	// names ("crc32c") need the aliases. depmod writes them into the cached extraction once.
	if _, err := os.Stat(filepath.Join(mods[0], "modules.alias")); err != nil {
		if _, err := runCmd(ctx, "", "depmod", "-b", kernelTree, kver); err != nil {
			return nil, fmt.Errorf("depmod (Debian package kmod): %w", err)
		}
	}
	tree, err := openModuleTree(mods[0])
	if err != nil {
		return nil, err
	}
	order, err := tree.loadOrder(modules)
	if err != nil {
		return nil, err
	}
	mdir := "usr/lib/modules/" + kver
	for _, f := range append([]string{"modules.builtin", "modules.builtin.modinfo", "modules.order"}, order...) {
		if err := b.copyFile(filepath.Join(mods[0], f), path.Join(mdir, f), 0o644); err != nil {
			return nil, err
		}
	}
	// modules.dep and friends, so that busybox modprobe works in scripts too.
	if _, err := runCmd(ctx, "", "depmod", "-b", b.root, kver); err != nil {
		return nil, fmt.Errorf("depmod (Debian package kmod): %w", err)
	}
	if err := os.WriteFile(filepath.Join(b.root, "etc/guest/modules"), []byte(strings.Join(order, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}

	// Configuration every guest wants, then the caller's files, then /init.
	base := []File{
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\n")},
		{Path: "/etc/hosts", Data: []byte("127.0.0.1 localhost\n10.0.2.2 host\n")},
	}
	for _, f := range append(append(base, cfg.Files...), File{Path: "/init", Mode: 0o755, Data: []byte(initScript)}) {
		if err := writeFile(b.root, f); err != nil {
			return nil, err
		}
	}
	return &Image{KernelVersion: kver, Packages: cfg.Packages, Modules: order}, nil
}

// writeFile writes f under root, following the merged-/usr mapping.
func writeFile(root string, f File) error {
	if !path.IsAbs(f.Path) {
		return fmt.Errorf("guest file %q: path must be absolute", f.Path)
	}
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	p := filepath.Join(root, guestPath(f.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	os.Remove(p)
	return os.WriteFile(p, f.Data, mode.Perm())
}

func (b *builder) copyFile(src, rel string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	dst := filepath.Join(b.root, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	b.have[rel] = true
	return out.Close()
}

// copyPackage copies an extracted package tree into the guest.
func (b *builder) copyPackage(tree string) error {
	return filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		if rel == "." {
			return nil
		}
		if skipped(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := guestPath(rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(b.root, dst), 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.Remove(filepath.Join(b.root, dst))
			return os.Symlink(target, filepath.Join(b.root, dst))
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := b.copyFile(p, dst, fi.Mode().Perm()); err != nil {
				return err
			}
			if fi.Mode().Perm()&0o111 != 0 || strings.Contains(path.Base(rel), ".so") {
				b.elfs = append(b.elfs, dst)
			}
			return nil
		}
		return nil // device nodes and fifos do not occur in Debian packages
	})
}

// resolveLibs copies the program interpreter and every DT_NEEDED library, transitively, of the ELF files
// copied so far into /usr/lib/x86_64-linux-gnu (the interpreter to its own path).
func (b *builder) resolveLibs() error {
	queue := append([]string{"usr/bin/busybox"}, b.elfs...)
	for len(queue) > 0 {
		rel := queue[0]
		queue = queue[1:]
		needed, interp, isELF, err := elfNeeds(filepath.Join(b.root, rel))
		if err != nil {
			return err
		}
		if !isELF {
			continue
		}
		if interp != "" {
			dst := guestPath(interp)
			if !b.have[dst] {
				src, ok := resolveIn("/", strings.TrimPrefix(interp, "/"))
				if !ok {
					return fmt.Errorf("%s: interpreter %s not on the host", rel, interp)
				}
				if err := b.copyFile(src, dst, 0o755); err != nil {
					return err
				}
			}
		}
		sort.Strings(needed)
		for _, lib := range needed {
			dst := "usr/lib/x86_64-linux-gnu/" + lib
			if b.have[dst] {
				continue
			}
			if _, err := os.Stat(filepath.Join(b.root, dst)); err == nil {
				b.have[dst] = true // shipped by a package the guest has
				queue = append(queue, dst)
				continue
			}
			src, err := b.libs.find(lib)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if err := b.copyFile(src, dst, 0o755); err != nil {
				return err
			}
			queue = append(queue, dst)
		}
	}
	return nil
}

// writeInitrd packs the directory root into a gzip'd newc cpio at file.
func writeInitrd(file, root string) (err error) {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := gzip.NewWriter(f)
	if err := writeTree(zw, root); err != nil {
		return err
	}
	return zw.Close()
}

// writeTree writes every file, directory and symlink under root as a cpio archive, parents first.
func writeTree(w io.Writer, root string) error {
	cw := newCPIOWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return cw.Dir(rel, fi.Mode())
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return cw.Symlink(rel, t)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return cw.File(rel, fi.Mode(), data)
		}
		return fmt.Errorf("%s: unsupported file type %v", p, fi.Mode().Type())
	})
	if err != nil {
		return err
	}
	return cw.Close()
}
