package task

import (
	"strings"
	"testing"
)

// Names as nvidia-smi --query-gpu=name prints them.
var smiNames = []string{
	"NVIDIA A100-SXM4-80GB",
	"NVIDIA A100 80GB PCIe",
	"NVIDIA A100-SXM4-40GB",
	"NVIDIA A100-PCIE-40GB",
	"NVIDIA H100 80GB HBM3",
	"NVIDIA H100 PCIe",
	"NVIDIA H200",
	"NVIDIA GeForce RTX 4090",
	"NVIDIA GeForce RTX 3090",
	"NVIDIA GeForce RTX 3090 Ti",
	"NVIDIA RTX A6000",
	"NVIDIA RTX 6000 Ada Generation",
	"Quadro RTX 8000",
	"NVIDIA L40S",
	"NVIDIA L4",
	"NVIDIA A10G",
	"NVIDIA A10",
	"NVIDIA A40",
	"Tesla T4",
	"Tesla V100-SXM2-32GB",
	"Tesla V100-PCIE-16GB",
}

func TestMatchGPU(t *testing.T) {
	t.Parallel()
	// want -> the names it matches; every other name in smiNames must not.
	tests := map[string][]string{
		"A100":             {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"},
		"a100":             {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"},
		"A100-80GB":        {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"},
		"A100-80G":         {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"},
		"A100-40GB":        {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"},
		"A100-SXM4-80GB":   {"NVIDIA A100-SXM4-80GB"},
		"H100":             {"NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"},
		"H100-80GB":        {"NVIDIA H100 80GB HBM3"},
		"H200":             {"NVIDIA H200"},
		"H20":              nil,
		"RTX4090":          {"NVIDIA GeForce RTX 4090"},
		"4090":             {"NVIDIA GeForce RTX 4090"},
		"RTX-4090":         {"NVIDIA GeForce RTX 4090"},
		"rtx 4090":         {"NVIDIA GeForce RTX 4090"},
		"GeForce RTX 4090": {"NVIDIA GeForce RTX 4090"},
		"RTX3090":          {"NVIDIA GeForce RTX 3090"},
		"RTX3090Ti":        {"NVIDIA GeForce RTX 3090 Ti"},
		"RTX-3090-Ti":      {"NVIDIA GeForce RTX 3090 Ti"},
		"A6000":            {"NVIDIA RTX A6000"},
		"RTXA6000":         {"NVIDIA RTX A6000"},
		"RTX6000":          nil, // the Ada card is a different GPU; no Quadro RTX 6000 here
		"RTX6000-Ada":      {"NVIDIA RTX 6000 Ada Generation"},
		"RTX8000":          {"Quadro RTX 8000"},
		"L40S":             {"NVIDIA L40S"},
		"L40":              nil,
		"L4":               {"NVIDIA L4"},
		"A10G":             {"NVIDIA A10G"},
		"A10":              {"NVIDIA A10"},
		"A40":              {"NVIDIA A40"},
		"T4":               {"Tesla T4"},
		"V100":             {"Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB"},
		"V100-32GB":        {"Tesla V100-SXM2-32GB"},
		"NVIDIA H200":      {"NVIDIA H200"},
		"RTX":              nil, // names no model
		"NVIDIA":           nil,
		"80GB":             {"NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA H100 80GB HBM3"},
	}
	for want, matches := range tests {
		yes := map[string]bool{}
		for _, m := range matches {
			yes[m] = true
		}
		for _, name := range smiNames {
			if got := MatchGPU(want, name); got != yes[name] {
				t.Errorf("MatchGPU(%q, %q) = %v, want %v", want, name, got, yes[name])
			}
		}
	}
	for _, name := range smiNames {
		if !MatchGPU("", name) {
			t.Errorf("MatchGPU(\"\", %q) = false; an empty type is any GPU", name)
		}
	}
}

func TestParseGPUFlag(t *testing.T) {
	t.Parallel()
	good := map[string]Accel{
		"2":           {"", 2},
		"0":           {"", 0},
		"A100":        {"A100", 1},
		"A100:2":      {"A100", 2},
		" H100:8 ":    {"H100", 8},
		"A100-80GB:4": {"A100-80GB", 4},
	}
	for in, want := range good {
		got, err := ParseGPUFlag(in)
		if err != nil || got != want {
			t.Errorf("ParseGPUFlag(%q) = %v, %v; want %v", in, got, err, want)
			continue
		}
		// String gives the flag back.
		if again, err := ParseGPUFlag(got.String()); err != nil || again != got {
			t.Errorf("ParseGPUFlag(%q.String() = %q) = %v, %v", in, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"":         "give a GPU type",
		"A100:0":   "positive integer",
		"A100:-1":  "positive integer",
		"A100:1.5": "whole GPUs",
		"A100:x":   "positive integer",
		":2":       "give a GPU type",
		"tpu-v4-8": "TPUs are not supported",
		"A100;rm":  "not a GPU type",
		"-1":       "not a GPU type",
	}
	for in, want := range bad {
		_, err := ParseGPUFlag(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--gpus: ") {
			t.Errorf("ParseGPUFlag(%q) = %v, want an error about %q", in, err, want)
		}
	}
}
