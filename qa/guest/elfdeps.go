package guest

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// elfNeeds returns the shared libraries an ELF file names in DT_NEEDED and its program interpreter
// (PT_INTERP, "" for static binaries). isELF is false, with no error, for files that are not ELF at all
// (scripts, data).
func elfNeeds(file string) (needed []string, interp string, isELF bool, err error) {
	var magic [4]byte
	if r, err := os.Open(file); err != nil {
		return nil, "", false, err
	} else {
		_, err := io.ReadFull(r, magic[:])
		r.Close()
		if err != nil || string(magic[:]) != elf.ELFMAG {
			return nil, "", false, nil // shorter than a magic number, or not ELF
		}
	}
	f, err := elf.Open(file)
	if err != nil {
		return nil, "", true, fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, "", true, fmt.Errorf("%s: reading PT_INTERP: %w", file, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err = f.ImportedLibraries()
	if err != nil {
		return nil, "", true, fmt.Errorf("%s: DT_NEEDED: %w", file, err)
	}
	return needed, interp, true, nil
}

// libDirs are the directories, relative to a root, searched for a DT_NEEDED name: Debian's multiarch
// directories before the plain ones, /usr and non-/usr alike (packages in bookworm still install into
// /lib while the host's root is merged).
var libDirs = []string{
	"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib",
}

// libFinder looks shared libraries up in extracted packages first, then on the host.
type libFinder struct {
	roots []string // extracted package trees, searched in order, then "/"
}

// find returns the real file (symlinks resolved) that provides library soname.
func (lf *libFinder) find(soname string) (string, error) {
	for _, root := range append(append([]string(nil), lf.roots...), "/") {
		for _, d := range libDirs {
			if p, ok := resolveIn(root, path.Join(d, soname)); ok {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("shared library %s not found in %d extracted packages nor on the host (add the package that has it)", soname, len(lf.roots))
}

// resolveIn follows rel (a path relative to root) through symlinks that stay inside root, treating
// absolute link targets as relative to root, and returns the regular file it ends at.
func resolveIn(root, rel string) (string, bool) {
	for hops := 0; hops < 40; hops++ {
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			// A directory on the way may itself be a symlink (the host's /lib -> usr/lib).
			if root == "/" {
				if real, err := filepath.EvalSymlinks(p); err == nil {
					if fi, err := os.Stat(real); err == nil && fi.Mode().IsRegular() {
						return real, true
					}
				}
			}
			return "", false
		}
		switch {
		case fi.Mode().IsRegular():
			return p, true
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return "", false
			}
			if path.IsAbs(target) {
				rel = strings.TrimPrefix(path.Clean(target), "/")
			} else {
				rel = path.Join(path.Dir(rel), target)
			}
		default:
			return "", false
		}
	}
	return "", false
}
