package task

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// The task decoder works on this small tree rather than on goccy's AST
// directly: anchors, aliases, merge keys and tags are resolved once here,
// and every node keeps the line:column the user must edit.

type pos struct{ line, col int }

type kind int

const (
	kNull kind = iota
	kScalar
	kMap
	kSeq
)

type scalarType int

const (
	sString scalarType = iota
	sInt
	sFloat
	sBool
)

type node struct {
	kind kind
	at   pos
	// scalars
	text   string // the value as written, unquoted
	stype  scalarType
	intVal int64 // for sInt; intOK false when it does not fit
	intOK  bool
	// mappings, in file order, merge keys expanded
	entries []entry
	// sequences
	items []*node
}

type entry struct {
	key string
	at  pos // the key's position
	val *node
}

func (n *node) describe() string {
	switch n.kind {
	case kNull:
		return "null"
	case kMap:
		return "a mapping"
	case kSeq:
		return "a list"
	}
	switch n.stype {
	case sInt:
		return "the number " + n.text
	case sFloat:
		return "the number " + n.text
	case sBool:
		return "the boolean " + n.text
	}
	return strconv.Quote(n.text)
}

type converter struct {
	file    string
	anchors map[string]*node
	depth   int
}

// parseYAML parses data into one document's tree; nil for an empty file.
func parseYAML(file string, data []byte) (*node, error) {
	tokens, err := scanTokens(file, data)
	if err != nil {
		return nil, err
	}
	f, err := parser.Parse(tokens, 0)
	if err != nil {
		return nil, syntaxError(file, data, err)
	}
	var body ast.Node
	for _, d := range f.Docs {
		if d == nil || d.Body == nil {
			continue
		}
		if body != nil {
			l, c := nodePos(d.Body)
			return nil, &Error{File: file, Line: l, Col: c, Msg: "the file holds several YAML documents (a SkyPilot pipeline): sshq runs one task per file; split it into one file per task"}
		}
		body = d.Body
	}
	if body == nil {
		return nil, nil
	}
	c := &converter{file: file, anchors: map[string]*node{}}
	return c.convert(body)
}

var alreadyDefined = regexp.MustCompile(`^mapping key "(.*)" already defined at \[(\d+):(\d+)\]$`)

// syntaxError turns the parser's error into an *Error at the same place,
// with the hint a person needs for the mistakes people actually make.
func syntaxError(file string, data []byte, err error) error {
	e := &Error{File: file, Msg: "invalid YAML: " + err.Error(), err: err}
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return e
	}
	msg := ye.GetMessage()
	if tk := ye.GetToken(); tk != nil && tk.Position != nil {
		e.Line, e.Col = tk.Position.Line, tk.Position.Column
	}
	switch m := alreadyDefined.FindStringSubmatch(msg); {
	case m != nil:
		e.Msg = fmt.Sprintf("duplicate key %q (first at line %s): YAML keeps only one; remove or merge the other", m[1], m[2])
	case strings.Contains(msg, "'\t'") || tabIndented(data, e.Line):
		e.Msg = "tab in the indentation: YAML indents with spaces only; replace the tabs with spaces"
	default:
		e.Msg = "invalid YAML: " + msg + " (check the indentation and quoting here)"
	}
	return e
}

func tabIndented(data []byte, line int) bool {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return false
	}
	l := lines[line-1]
	return strings.Contains(l[:len(l)-len(strings.TrimLeft(l, " \t"))], "\t")
}

func tokenPos(tk *token.Token) pos {
	if tk == nil || tk.Position == nil {
		return pos{}
	}
	return pos{tk.Position.Line, tk.Position.Column}
}

// nodePos is where a person sees the node start: goccy places a block
// mapping at its first ':'; the first key is where the mapping begins.
func nodePos(n ast.Node) (int, int) {
	if n == nil {
		return 0, 0
	}
	if m, ok := n.(*ast.MappingNode); ok && !m.IsFlowStyle && len(m.Values) > 0 && m.Values[0] != nil && m.Values[0].Key != nil {
		return nodePos(m.Values[0].Key)
	}
	p := tokenPos(n.GetToken())
	return p.line, p.col
}

func (c *converter) errAt(n ast.Node, msg string) error {
	l, col := nodePos(n)
	return &Error{File: c.file, Line: l, Col: col, Msg: msg}
}

func (c *converter) convert(n ast.Node) (*node, error) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > MaxDepth {
		return nil, c.errAt(n, fmt.Sprintf("nested more than %d levels deep (sshq's limit; a task file nests a few): check the brackets and indentation here", MaxDepth))
	}
	if n == nil {
		return &node{kind: kNull}, nil
	}
	l, col := nodePos(n)
	at := pos{l, col}
	switch v := n.(type) {
	case *ast.NullNode:
		return &node{kind: kNull, at: at}, nil
	case *ast.StringNode:
		return &node{kind: kScalar, at: at, text: v.Value, stype: sString}, nil
	case *ast.LiteralNode:
		s := ""
		if v.Value != nil {
			s = v.Value.Value
		}
		return &node{kind: kScalar, at: at, text: s, stype: sString}, nil
	case *ast.IntegerNode:
		out := &node{kind: kScalar, at: at, text: tokenText(v), stype: sInt}
		switch x := v.Value.(type) {
		case int64:
			out.intVal, out.intOK = x, true
		case uint64:
			if x <= 1<<62 {
				out.intVal, out.intOK = int64(x), true
			}
		}
		return out, nil
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return &node{kind: kScalar, at: at, text: tokenText(n), stype: sFloat}, nil
	case *ast.BoolNode:
		return &node{kind: kScalar, at: at, text: tokenText(n), stype: sBool}, nil
	case *ast.MergeKeyNode:
		return &node{kind: kScalar, at: at, text: "<<", stype: sString}, nil
	case *ast.TagNode:
		inner, err := c.convert(v.Value)
		if err != nil {
			return nil, err
		}
		tag := ""
		if v.Start != nil {
			tag = v.Start.Value
		}
		switch tag {
		case "!!str":
			if inner.kind == kScalar || inner.kind == kNull {
				return &node{kind: kScalar, at: at, text: inner.text, stype: sString}, nil
			}
		case "!!null":
			return &node{kind: kNull, at: at}, nil
		}
		return inner, nil
	case *ast.AnchorNode:
		name := ""
		if v.Name != nil && v.Name.GetToken() != nil {
			name = v.Name.GetToken().Value
		}
		// A placeholder first, so an alias inside its own anchor ends as
		// null instead of recursing forever.
		c.anchors[name] = &node{kind: kNull, at: at}
		out, err := c.convert(v.Value)
		if err != nil {
			return nil, err
		}
		c.anchors[name] = out
		return out, nil
	case *ast.AliasNode:
		name := ""
		if v.Value != nil && v.Value.GetToken() != nil {
			name = v.Value.GetToken().Value
		}
		a, ok := c.anchors[name]
		if !ok {
			return nil, c.errAt(n, fmt.Sprintf("alias *%s refers to no anchor &%s defined above it: define the anchor first", name, name))
		}
		return a, nil
	case *ast.MappingKeyNode:
		return c.convert(v.Value)
	case *ast.MappingValueNode:
		return c.mapping(at, []*ast.MappingValueNode{v})
	case *ast.MappingNode:
		return c.mapping(at, v.Values)
	case *ast.SequenceNode:
		out := &node{kind: kSeq, at: at}
		for _, item := range v.Values {
			x, err := c.convert(item)
			if err != nil {
				return nil, err
			}
			out.items = append(out.items, x)
		}
		return out, nil
	}
	return nil, c.errAt(n, fmt.Sprintf("unsupported YAML construct (%s): write plain mappings, lists and strings", n.Type()))
}

func tokenText(n ast.Node) string {
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

func (c *converter) mapping(at pos, values []*ast.MappingValueNode) (*node, error) {
	out := &node{kind: kMap, at: at}
	seen := map[string]int{} // key -> index in out.entries
	var merged []bool        // entry i came from a merge key (<<)
	set := func(e entry, fromMerge bool) error {
		i, ok := seen[e.key]
		switch {
		case !ok:
			seen[e.key] = len(out.entries)
			out.entries = append(out.entries, e)
			merged = append(merged, fromMerge)
		case fromMerge:
			// Keys written in the mapping, and earlier merges, win.
		case merged[i]:
			out.entries[i], merged[i] = e, false
		default:
			return &Error{File: c.file, Line: e.at.line, Col: e.at.col,
				Msg: fmt.Sprintf("duplicate key %q (first at line %d): YAML keeps only one; remove or merge the other", e.key, out.entries[i].at.line)}
		}
		return nil
	}
	for _, mv := range values {
		if mv == nil {
			continue
		}
		if mv.Key != nil && mv.Key.IsMergeKey() {
			src, err := c.convert(mv.Value)
			if err != nil {
				return nil, err
			}
			srcs := []*node{src}
			if src.kind == kSeq {
				srcs = src.items
			}
			for _, s := range srcs {
				if s.kind != kMap {
					return nil, c.errAt(mv.Value, "a merge key (<<) needs a mapping or a list of mappings")
				}
				for _, e := range s.entries {
					if err := set(e, true); err != nil {
						return nil, err
					}
				}
			}
			continue
		}
		k, err := c.convert(mv.Key)
		if err != nil {
			return nil, err
		}
		if k.kind != kScalar {
			return nil, c.errAt(mv.Key, "a key must be a plain name, not "+k.describe())
		}
		v, err := c.convert(mv.Value)
		if err != nil {
			return nil, err
		}
		if v.kind == kNull && v.at == (pos{}) {
			v.at = k.at
		}
		if err := set(entry{key: k.text, at: k.at, val: v}, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}
