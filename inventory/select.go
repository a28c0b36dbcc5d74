package inventory

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml"
)

// ErrNoNodes means no node selection was given anywhere; the CLI turns it
// into advice listing the aliases it found.
var ErrNoNodes = errors.New("no nodes chosen")

// SplitPatterns splits a comma- or space-separated node list.
func SplitPatterns(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// Select picks the nodes named by patterns, in the order of the patterns and
// then of the config. A pattern is an alias, an ssh-style glob (`gpu-*`,
// `node?`) matched against the config's concrete aliases, or `!glob` to
// drop what earlier patterns picked. A plain name not in the config is kept:
// ssh can reach a host with no Host block too.
func Select(aliases, patterns []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, p := range patterns {
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			kept := out[:0]
			for _, a := range out {
				if m, _ := path.Match(neg, a); m {
					delete(seen, a)
					continue
				}
				kept = append(kept, a)
			}
			out = kept
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("node pattern %q is not a valid glob: %v", p, err)
		}
		if !strings.ContainsAny(p, "*?[") {
			add(p)
			continue
		}
		matched := false
		for _, a := range aliases {
			if m, _ := path.Match(p, a); m {
				add(a)
				matched = true
			}
		}
		if !matched {
			return nil, fmt.Errorf("node pattern %q matches no Host in your ssh config (hosts found: %s)", p, listOrNone(aliases))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the node patterns %q select no node", strings.Join(patterns, ","))
	}
	return out, nil
}

func listOrNone(a []string) string {
	if len(a) == 0 {
		return "none"
	}
	return strings.Join(a, ", ")
}

// Settings is $SSHQ_HOME/config.yaml.
type Settings struct {
	Nodes []string `yaml:"nodes"`
	// SSHConfig is the ssh config `sshq init` read the nodes from, when it
	// was not the default one.
	SSHConfig string `yaml:"ssh_config,omitempty"`
	// PerNode are settings of single nodes, by alias.
	PerNode map[string]NodeSettings `yaml:"per_node,omitempty"`
	// Slurm are the hosts of the ssh config that are Slurm login nodes:
	// jobs placed there go through sbatch instead of the host's own queue.
	Slurm []string `yaml:"slurm,omitempty"`
	// Defaults are the limits of a job whose launch does not set them.
	Defaults Defaults `yaml:"defaults,omitempty"`
}

// NodeSettings are one node's entry under per_node.
type NodeSettings struct {
	// IP is the address the other nodes of a multi-node job reach this
	// node by (its MASTER_ADDR when it is rank 0, its entry in
	// SKYPILOT_NODE_IPS), when the ssh config's HostName is not one.
	IP string `yaml:"ip,omitempty"`
}

// Defaults are config.yaml's `defaults:`, as written (the orchestrator
// reads the sizes and durations): the memory of a job per GPU it uses
// (mem_per_gpu: 60G), the memory of a job without GPUs (or, without
// mem_per_gpu, of any job: mem: 16G), and its time limit (time: 3d).
type Defaults struct {
	MemPerGPU string `yaml:"mem_per_gpu,omitempty"`
	Mem       string `yaml:"mem,omitempty"`
	Time      string `yaml:"time,omitempty"`
}

// SettingsPath is where `sshq init` writes the node list.
func SettingsPath(home string) string { return filepath.Join(home, "config.yaml") }

// LoadSettings reads config.yaml; a missing file is empty settings.
func LoadSettings(home string) (Settings, error) {
	var s Settings
	p := SettingsPath(home)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := yaml.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %s (fix the file or rewrite it with `sshq init PATTERN...`)", p, yaml.FormatError(err, false, true))
	}
	return s, nil
}

// SaveSettings writes config.yaml atomically.
func SaveSettings(home string, s Settings) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	data, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	header := []byte("# sshq settings: which ssh hosts (aliases or globs from your ssh config) are cluster nodes,\n# and the limits of jobs launched without --mem or --time (defaults: {mem_per_gpu: 60G, mem: 16G, time: 3d}).\n")
	tmp := SettingsPath(home) + ".tmp"
	if err := os.WriteFile(tmp, append(header, data...), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, SettingsPath(home))
}

// Patterns picks the node patterns by precedence: the --nodes flag, then
// SSHQ_NODES, then config.yaml. It returns ErrNoNodes when none is set.
func Patterns(flag, env string, s Settings) ([]string, string, error) {
	switch {
	case flag != "":
		return SplitPatterns(flag), "--nodes", nil
	case env != "":
		return SplitPatterns(env), "SSHQ_NODES", nil
	case len(s.Nodes) > 0:
		return s.Nodes, "config.yaml", nil
	}
	return nil, "", ErrNoNodes
}
