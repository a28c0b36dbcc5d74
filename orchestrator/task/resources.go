package task

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// resources reads resources:, or (top false) one entry of any_of/ordered.
func (d *decoder) resources(v *node, field string, top bool) error {
	switch v.kind {
	case kNull:
		return nil
	case kMap:
	default:
		return d.errf(v.at, field, "must be a mapping (accelerators:, cpus:, memory:), not %s", v.describe())
	}
	r := &d.t.Resources
	var accelAt, candAt *pos
	for _, e := range v.entries {
		f := field + "." + e.key
		var err error
		switch e.key {
		case "accelerators":
			if candAt != nil && top {
				return d.errf(e.at, f, "set accelerators either here or in the entries of any_of/ordered, not both")
			}
			var list []Accel
			var ordered bool
			list, ordered, err = d.accelerators(e.val, f)
			if err == nil {
				r.Accelerators = append(r.Accelerators, list...)
				if top {
					r.AccelOrdered = ordered
				}
				accelAt = &e.at
			}
		case "cpus", "memory":
			if !top {
				return d.errf(e.at, f, "per-candidate %s is not supported: set %s once, directly under resources:", e.key, e.key)
			}
			q, qerr := d.quantity(e.val, f, e.key == "memory")
			if e.key == "cpus" {
				r.CPUs = q
			} else {
				r.Memory = q
			}
			err = qerr
		case "ports":
			err = d.ports(e.val, f)
		case "any_of", "ordered":
			if !top {
				return d.errf(e.at, f, "cannot be nested inside another any_of/ordered entry")
			}
			if candAt != nil {
				return d.errf(e.at, f, "give either any_of or ordered, not both")
			}
			if accelAt != nil {
				return d.errf(e.at, f, "set accelerators either directly under resources or in the entries of %s, not both", e.key)
			}
			candAt = &e.at
			if e.val.kind != kSeq {
				return d.errf(e.val.at, f, "must be a list of resources, e.g.\n  %s:\n    - accelerators: A100:1\n    - accelerators: H100:1", e.key)
			}
			for i, item := range e.val.items {
				if err := d.resources(item, fmt.Sprintf("%s[%d]", f, i), false); err != nil {
					return err
				}
			}
			r.AccelOrdered = e.key == "ordered"
		default:
			if msg, ok := refusedResources[e.key]; ok {
				return d.errf(e.at, f, "%s", msg)
			}
			if why, ok := ignoredResources[e.key]; ok {
				if e.val.kind != kNull {
					d.warn(e.at, f, why)
				}
				continue
			}
			return d.unknown(e, field+".", knownResources, resourceHints)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// accelerators reads every SkyPilot spelling: "A100:2", A100, {A100: 2},
// {A100:1, V100:1} (a set: any will do), or a list (a preference order).
// A bare number is sshq's own: that many GPUs of any type.
func (d *decoder) accelerators(v *node, field string) ([]Accel, bool, error) {
	switch v.kind {
	case kNull:
		return nil, false, nil
	case kScalar:
		if v.stype == sInt {
			if !v.intOK || v.intVal < 1 {
				return nil, false, d.errf(v.at, field, "%s: count must be a positive integer, as in A100:2", v.text)
			}
			return []Accel{{Count: int(v.intVal)}}, false, nil
		}
		a, err := d.accelString(v, field)
		if err != nil {
			return nil, false, err
		}
		return []Accel{a}, false, nil
	case kMap:
		var out []Accel
		for _, e := range v.entries {
			a, err := d.accelEntry(e, field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		}
		if len(out) == 0 {
			return nil, false, d.errf(v.at, field, "is an empty mapping: give a GPU type, as in A100:1")
		}
		return out, false, nil
	}
	var out []Accel
	for _, item := range v.items {
		switch item.kind {
		case kScalar:
			if item.stype != sString {
				return nil, false, d.errf(item.at, field, "%s: give a GPU type and count, as in A100:2", item.describe())
			}
			a, err := d.accelString(item, field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		case kMap:
			if len(item.entries) != 1 {
				return nil, false, d.errf(item.at, field, "each list entry names one GPU type, as in - A100: 2")
			}
			a, err := d.accelEntry(item.entries[0], field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		default:
			return nil, false, d.errf(item.at, field, "each list entry names one GPU type, as in - A100:2, not %s", item.describe())
		}
	}
	if len(out) == 0 {
		return nil, false, d.errf(v.at, field, "is an empty list: give a GPU type, as in A100:1")
	}
	return out, true, nil
}

func (d *decoder) accelString(v *node, field string) (Accel, error) {
	a, msg := parseAccel(v.text)
	if msg != "" {
		return Accel{}, d.errf(v.at, field, "%q: %s", v.text, msg)
	}
	return a, nil
}

// accelEntry reads one mapping entry: A100: 2, A100: (count 1), or the
// "A100:1": null that {A100:1, V100:1} means to a YAML 1.1 parser.
func (d *decoder) accelEntry(e entry, field string) (Accel, error) {
	switch e.val.kind {
	case kNull:
		a, msg := parseAccel(e.key)
		if msg != "" {
			return Accel{}, d.errf(e.at, field, "%q: %s", e.key, msg)
		}
		return a, nil
	case kScalar:
		if strings.Contains(e.key, ":") {
			return Accel{}, d.errf(e.at, field, "%q: give the count once, as in %s: 2", e.key, strings.SplitN(e.key, ":", 2)[0])
		}
		a, msg := parseAccel(e.key + ":" + e.val.text)
		if msg != "" {
			return Accel{}, d.errf(e.val.at, field, "%s: %s: %s", e.key, e.val.text, msg)
		}
		return a, nil
	}
	return Accel{}, d.errf(e.val.at, field, "%s: the count must be a positive integer, not %s", e.key, e.val.describe())
}

var quantityRe = regexp.MustCompile(`^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*(\+?)\s*$`)

var memUnits = map[string]float64{"": 1, "g": 1, "gb": 1, "gib": 1, "t": 1024, "tb": 1024, "tib": 1024, "m": 1.0 / 1024, "mb": 1.0 / 1024, "mib": 1.0 / 1024}

// quantity reads cpus: or memory: (4, 4.5, "4+", "32GB+").
func (d *decoder) quantity(v *node, field string, memory bool) (Quantity, error) {
	example := `4 or "4+" (at least 4)`
	if memory {
		example = `32 or "32+" (GB; at least 32)`
	}
	if v.kind == kNull {
		return Quantity{}, nil
	}
	if v.kind != kScalar || v.stype == sBool {
		return Quantity{}, d.errf(v.at, field, "must be a number, as in %s, not %s", example, v.describe())
	}
	m := quantityRe.FindStringSubmatch(v.text)
	if m == nil {
		return Quantity{}, d.errf(v.at, field, "%q: must be a number, as in %s", v.text, example)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	unit, ok := memUnits[strings.ToLower(m[2])]
	if m[2] != "" && !memory || !ok {
		return Quantity{}, d.errf(v.at, field, "%q: unknown unit %q; write it as %s", v.text, m[2], example)
	}
	f *= unit
	if err != nil || f <= 0 || math.IsInf(f, 0) {
		return Quantity{}, d.errf(v.at, field, "%q: must be a positive number, as in %s", v.text, example)
	}
	return Quantity{Value: f, OrMore: m[3] == "+"}, nil
}
