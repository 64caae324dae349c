package guest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// moduleName normalises a kernel module name: the kernel treats '-' and '_' alike and names files with
// either ("dm-mod.ko" is module dm_mod).
func moduleName(s string) string {
	s = strings.TrimSuffix(filepath.Base(s), ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// modinfo is what module loading order needs from a module's .modinfo ELF section.
type modinfo struct {
	Depends    []string // hard dependencies, "depends=a,b"
	SoftdepPre []string // "softdep=pre: a b post: c": modules wanted before this one (raid456 wants crc32c)
}

// parseModinfo parses the contents of a .modinfo section: NUL-separated "key=value" strings. Keys other
// than depends and softdep are ignored; an entry without '=' is an error naming its byte offset.
func parseModinfo(b []byte) (modinfo, error) {
	var mi modinfo
	off := 0
	for _, kv := range bytes.Split(b, []byte{0}) {
		start := off
		off += len(kv) + 1
		if len(kv) == 0 {
			continue // padding between entries
		}
		key, value, ok := bytes.Cut(kv, []byte("="))
		if !ok {
			return modinfo{}, fmt.Errorf("modinfo: entry at byte %d has no '=': %q", start, kv)
		}
		switch string(key) {
		case "depends":
			for _, d := range strings.Split(string(value), ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, moduleName(d))
				}
			}
		case "softdep":
			// "pre: a b post: c" (either part may be missing).
			pre := false
			for _, f := range strings.Fields(string(value)) {
				switch f {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						mi.SoftdepPre = append(mi.SoftdepPre, moduleName(f))
					}
				}
			}
		}
	}
	return mi, nil
}

// readModinfo reads the .modinfo section of the module file at path.
func readModinfo(path string) (modinfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return modinfo{}, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return modinfo{}, fmt.Errorf("%s: no .modinfo section", path)
	}
	b, err := s.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("%s: .modinfo: %w", path, err)
	}
	mi, err := parseModinfo(b)
	if err != nil {
		return modinfo{}, fmt.Errorf("%s: %w", path, err)
	}
	return mi, nil
}

// moduleTree indexes the modules of one kernel: lib/modules/KVER under a root directory.
type moduleTree struct {
	dir     string              // .../lib/modules/KVER
	paths   map[string]string   // module name -> path relative to dir
	builtin map[string]bool     // modules built into the kernel (modules.builtin)
	aliases map[string][]string // alias -> module names (modules.alias), for softdeps like "crc32c"
	// info reads a module's .modinfo given its path relative to dir (readModinfo; tests replace it).
	info func(rel string) (modinfo, error)
}

func openModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, paths: map[string]string{}, builtin: map[string]bool{}, aliases: map[string][]string{}}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(dir, p)
			t.paths[moduleName(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing kernel modules: %w", err)
	}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				t.builtin[moduleName(l)] = true
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		a, err := parseModulesAlias(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s/modules.alias: %w", dir, err)
		}
		t.aliases = a
	}
	t.info = func(rel string) (modinfo, error) { return readModinfo(filepath.Join(dir, rel)) }
	return t, nil
}

// parseModulesAlias parses depmod's modules.alias: "alias NAME MODULE" lines and # comments. Only plain
// names are kept (no wildcards: device aliases are no use for picking a module by name).
func parseModulesAlias(s string) (map[string][]string, error) {
	a := map[string][]string{}
	for n, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return nil, fmt.Errorf("line %d: want \"alias NAME MODULE\", got %q", n+1, line)
		}
		if strings.ContainsAny(f[1], "*?[") {
			continue
		}
		name := moduleName(f[1])
		a[name] = append(a[name], moduleName(f[2]))
	}
	return a, nil
}

// resolveAlias returns the module providing name when name is not itself a module or built in: the
// "_generic" implementation if there is one (it works on every CPU), else the first.
func (t *moduleTree) resolveAlias(name string) string {
	if _, ok := t.paths[name]; ok || t.builtin[name] {
		return name
	}
	mods := t.aliases[name]
	for _, m := range mods {
		if t.builtin[m] {
			return m
		}
	}
	for _, m := range mods {
		if strings.HasSuffix(m, "_generic") {
			return m
		}
	}
	if len(mods) > 0 {
		return mods[0]
	}
	return name
}

// loadOrder returns the module files (relative to the tree) that must be loaded, in an order where every
// module comes after its dependencies and its soft pre-dependencies. Built-in modules are left out; a
// name that is neither a module, an alias of one (modules.alias) nor built in is an error. A missing soft dependency is not an error.
func (t *moduleTree) loadOrder(names []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, soft bool, chain []string) error
	visit = func(name string, soft bool, chain []string) error {
		name = t.resolveAlias(moduleName(name))
		if t.builtin[name] || state[name] == 2 {
			return nil
		}
		rel, ok := t.paths[name]
		if !ok {
			if soft {
				return nil
			}
			return fmt.Errorf("kernel module %q (needed by %s) is neither in %s nor built in", name, strings.Join(chain, " <- "), t.dir)
		}
		if state[name] == 1 {
			if soft {
				return nil // a soft dependency may close a loop; loading order is then best effort
			}
			return fmt.Errorf("kernel module dependency loop: %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = 1
		mi, err := t.info(rel)
		if err != nil {
			return err
		}
		chain = append(chain, name)
		for _, d := range mi.Depends {
			if err := visit(d, false, chain); err != nil {
				return err
			}
		}
		for _, d := range mi.SoftdepPre {
			if err := visit(d, true, chain); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, rel)
		return nil
	}
	for _, n := range names {
		if err := visit(n, false, []string{"the guest config"}); err != nil {
			return nil, err
		}
	}
	return order, nil
}
