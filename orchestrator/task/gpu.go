package task

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var gpuTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$`)

// parseAccel reads "A100:2" or "A100" (one GPU). It returns the reason
// instead of an error so callers can place it in the file or on the flag.
func parseAccel(s string) (Accel, string) {
	typ, count, hasCount := strings.Cut(strings.TrimSpace(s), ":")
	typ = strings.TrimSpace(typ)
	switch {
	case typ == "":
		return Accel{}, "give a GPU type before the count, as in A100:2"
	case strings.HasPrefix(strings.ToLower(typ), "tpu"):
		return Accel{}, "TPUs are not supported: sshq schedules the NVIDIA GPUs of your ssh nodes"
	case !gpuTypeRe.MatchString(typ):
		return Accel{}, "not a GPU type: write it as nvidia-smi names it, as in A100, H100 or RTX4090, with an optional :count"
	}
	a := Accel{Type: typ, Count: 1}
	if !hasCount {
		return a, ""
	}
	count = strings.TrimSpace(count)
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || strings.HasPrefix(count, "+") {
		msg := "count must be a positive integer, as in " + typ + ":2"
		if f, ferr := strconv.ParseFloat(count, 64); ferr == nil && f > 0 {
			msg += " (sshq gives a job whole GPUs)"
		}
		return Accel{}, msg
	}
	a.Count = n
	return a, ""
}

// ParseGPUFlag reads the command line's --gpus: "2" (two GPUs of any type),
// "A100" (one A100), "A100:2", or "0" (no GPU: a CPU job).
func ParseGPUFlag(s string) (Accel, error) {
	t := strings.TrimSpace(s)
	if t != "" && strings.Trim(t, "0123456789") == "" {
		n, err := strconv.Atoi(t)
		if err == nil {
			return Accel{Count: n}, nil
		}
	}
	a, msg := parseAccel(t)
	if msg != "" {
		return Accel{}, &Error{Field: "--gpus", Msg: fmt.Sprintf("%q: %s (or a bare count such as 2 for any GPU type)", s, msg)}
	}
	return a, nil
}

// vendorWords say nothing about the model; "Tesla T4" is a T4.
var vendorWords = map[string]bool{"nvidia": true, "geforce": true, "tesla": true, "quadro": true}

// variantWords make a different card of the same number (an RTX 3090 Ti is
// not an RTX 3090), so a request matches them only when it names them.
var variantWords = map[string]bool{"ti": true, "super": true, "ada": true}

var memSizeRe = regexp.MustCompile(`^[0-9]+g$`)

func gpuTokens(s string) []string {
	fields := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	})
	out := fields[:0]
	for _, f := range fields {
		if vendorWords[f] {
			continue
		}
		if memSizeRe.MatchString(f) {
			f += "b" // 80G is 80GB
		}
		out = append(out, f)
	}
	return out
}

// MatchGPU reports whether a GPU that nvidia-smi calls nvidiaSmiName is of
// the type the user asked for (an Accel's Type). Matching is loose the way
// people name GPUs, and strict where it matters:
//
//   - case, spaces, dashes and the words NVIDIA, GeForce, Tesla and Quadro
//     do not matter: RTX4090, rtx-4090 and 4090 all match
//     "NVIDIA GeForce RTX 4090"; T4 matches "Tesla T4";
//   - every part of want must appear in the name, in order, whole: A100
//     matches "NVIDIA A100-SXM4-80GB" and "NVIDIA A100 80GB PCIe";
//     A100-80GB matches both but not "NVIDIA A100-SXM4-40GB"; A10 matches
//     neither A100 nor A10G, L4 not L40S, T4 not "RTX 4090";
//   - the name's variant words (Ti, SUPER, Ada) must be asked for: 3090
//     does not match "RTX 3090 Ti";
//   - want must name a model (a part with a digit), so "RTX" alone matches
//     nothing.
//
// An empty want matches any GPU.
func MatchGPU(want, nvidiaSmiName string) bool {
	if strings.TrimSpace(want) == "" {
		return true
	}
	w, n := gpuTokens(want), gpuTokens(nvidiaSmiName)
	// Real names have under ten parts; the cap bounds the search on junk.
	if len(w) == 0 || len(n) == 0 || len(w) > 16 || len(n) > 16 {
		return false
	}
	return matchFrom(w, n, 0, 0, false)
}

// matchFrom matches w against n[from:], where a part of w may equal one
// name part or several adjacent ones joined ("rtx4090" = "rtx" "4090").
// covered marks the name parts matched so far.
func matchFrom(w, n []string, from int, covered uint32, model bool) bool {
	if len(w) == 0 {
		if !model {
			return false
		}
		for i, p := range n {
			if variantWords[p] && covered&(1<<i) == 0 {
				return false
			}
		}
		return true
	}
	for start := from; start < len(n); start++ {
		joined := ""
		var mask uint32
		hasDigit := false
		for end := start; end < len(n); end++ {
			joined += n[end]
			mask |= 1 << end
			hasDigit = hasDigit || strings.ContainsAny(n[end], "0123456789")
			if len(joined) > len(w[0]) || !strings.HasPrefix(w[0], joined) {
				break
			}
			if joined == w[0] && matchFrom(w[1:], n, end+1, covered|mask, model || hasDigit) {
				return true
			}
		}
	}
	return false
}
