package task

import (
	"fmt"
	"io"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/goccy/go-yaml/scanner"
	"github.com/goccy/go-yaml/token"
)

// Limits on what a task may hold. The file limits bound the work done on a
// wrong or hostile file before anything is built from it; the name and
// environment limits make a job fail at submit, where the message can say
// what to change, instead of with E2BIG on the node when the job starts.
const (
	// MaxFileSize is the largest task file read, in bytes: a task file is a
	// few KB.
	MaxFileSize = 512 << 10
	// MaxDepth is how deeply a task file may nest mappings and lists; real
	// task files nest four or five levels. goccy/go-yaml's time and memory
	// grow with the square of the depth (100,000 levels took minutes and
	// 15 GB), so the depth is measured on the token stream, before parsing.
	MaxDepth = 64
	// MaxKeys is how many mapping keys a task file may hold in all. The
	// parser's cost grows with the square of the keys in one block
	// mapping (57,000 took 46 s and 10 GB), and a task file has tens.
	MaxKeys = 4096
	// MaxNameLen is the longest job name, in bytes. The name is shown in
	// every table and reaches the job as $SSHQ_JOB_NAME.
	MaxNameLen = 256
	// MaxEnvNameLen is the longest environment variable name, in bytes.
	MaxEnvNameLen = 256
	// MaxEnvValueLen is the longest env or secret value, in bytes. Linux
	// refuses to start a program whose environment holds a NAME=VALUE
	// string over 128 KiB (MAX_ARG_STRLEN); a value up to 127 KiB with a
	// name up to MaxEnvNameLen always fits.
	MaxEnvValueLen = 127 << 10
	// MaxEnvTotal bounds the task's envs and secrets together, in bytes
	// (NAME=VALUE strings with their terminators and pointers). Linux allows
	// about 2 MiB for a program's arguments and environment together
	// (ARG_MAX), and the node's own environment and sshq's variables need
	// the rest.
	MaxEnvTotal = 1 << 20
	// MaxNumNodes bounds num_nodes: a number of nodes, not of anything
	// smaller, and it reaches sbatch --nodes.
	MaxNumNodes = 4096
)

const bigValueFix = "put the data in a file (in the workdir, or copied with file_mounts) and pass its path instead"

// CheckName reports why name cannot be a job's name, or nil. The error is
// a *Error with Field "name"; the name itself is never quoted whole.
func CheckName(name string) error {
	if why := nameProblem(name); why != "" {
		return &Error{Field: "name", Msg: why}
	}
	return nil
}

func nameProblem(name string) string {
	if len(name) > MaxNameLen {
		return fmt.Sprintf("is %d bytes long; a job name may have at most %d: shorten it", len(name), MaxNameLen)
	}
	for i, r := range name {
		switch {
		case r == utf8.RuneError && !validAt(name, i):
			return fmt.Sprintf("%s is not valid UTF-8 (byte %d): a job name is shown in everyone's tables; use printable characters", quoteShort(name), i)
		case !unicode.IsPrint(r) && r != ' ':
			return fmt.Sprintf("%s holds the control character %U at byte %d: a job name is shown in everyone's tables; use printable characters", quoteShort(name), r, i)
		}
	}
	return ""
}

func validAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size > 1
}

// CheckEnvValue reports why value cannot be the value of the job's
// environment variable name, or nil: it is too large for Linux to start a
// program with (E2BIG), or holds a NUL byte. The error is a *Error with
// Field set to name and never contains the value, so it is safe for
// secrets too; the command line sets Field to its flag, or wraps it.
func CheckEnvValue(name, value string) error {
	if why := envValueProblem(value); why != "" {
		return &Error{Field: name, Msg: why}
	}
	return nil
}

func envValueProblem(value string) string {
	if len(value) > MaxEnvValueLen {
		return fmt.Sprintf("the value is %d bytes; a value may have at most %d (127 KiB), because Linux refuses to start a program with an environment variable over 128 KiB: %s", len(value), MaxEnvValueLen, bigValueFix)
	}
	for i := 0; i < len(value); i++ {
		if value[i] == 0 {
			return fmt.Sprintf("the value holds a NUL byte (at byte %d), which no environment variable can carry: remove it", i)
		}
	}
	return ""
}

// envTotal is what the variables take of the kernel's ARG_MAX: each
// NAME=VALUE string, its NUL and its pointer.
func envTotal(maps ...map[string]string) int {
	n := 0
	for _, m := range maps {
		for k, v := range m {
			n += len(k) + 1 + len(v) + 1 + 8
		}
	}
	return n
}

// quoteShort quotes s for a message, cut short: a name 300 KB long must not
// become a 300 KB error.
func quoteShort(s string) string {
	const max = 40
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// scanTokens lexes data and checks MaxDepth and MaxKeys on the tokens, so
// that the parser, whose cost grows with the square of both, never sees a
// file over them. Lexing is linear in the file's size.
//
// Flow collections ([ ], { }) nest by their brackets. Block collections
// nest by indentation: each open one is remembered by the column of its
// entries ("- " or "key:"), and a new entry closes every open collection
// indented further. A block list may sit at its parent key's column
// (key:\n- a), which counts as one level deeper. The count can be off by a
// level in odd layouts, which MaxDepth's headroom absorbs, and the tree
// built afterwards checks the exact depth again.
func scanTokens(file string, data []byte) (token.Tokens, error) {
	var s scanner.Scanner
	s.Init(string(data))
	var tokens token.Tokens
	for {
		sub, err := s.Scan()
		if err == io.EOF {
			break
		}
		tokens.Add(sub...)
		if err != nil {
			// The invalid token is in sub; the parser reports it.
			break
		}
	}
	type level struct {
		col int
		seq bool
	}
	var (
		stack []level
		flow  int
		keys  int
		prev  *token.Token // the last token that is not a comment
	)
	tooDeep := func(tk *token.Token) error {
		p := tokenPos(tk)
		return &Error{File: file, Line: p.line, Col: p.col,
			Msg: fmt.Sprintf("nested more than %d levels deep (sshq's limit; a task file nests a few): check the brackets and indentation here", MaxDepth)}
	}
	enter := func(col int, seq bool) bool {
		for len(stack) > 0 && stack[len(stack)-1].col > col {
			stack = stack[:len(stack)-1]
		}
		if n := len(stack); n > 0 && stack[n-1].col == col {
			top := stack[n-1]
			switch {
			case top.seq == seq:
				return true // another entry of the same collection
			case top.seq && !seq:
				// key:\n- a\nnext: ends the list written at the key's column.
				stack = stack[:n-1]
				if n > 1 && stack[n-2].col == col && !stack[n-2].seq {
					return true
				}
			}
		}
		stack = append(stack, level{col, seq})
		return len(stack) <= MaxDepth
	}
	for _, tk := range tokens {
		if tk == nil || tk.Position == nil {
			continue
		}
		switch tk.Type {
		case token.CommentType:
			continue
		case token.DocumentHeaderType, token.DocumentEndType:
			stack, flow = stack[:0], 0
		case token.SequenceStartType, token.MappingStartType:
			flow++
			if len(stack)+flow > MaxDepth {
				return nil, tooDeep(tk)
			}
		case token.SequenceEndType, token.MappingEndType:
			if flow > 0 {
				flow--
			}
		case token.SequenceEntryType:
			if flow == 0 && !enter(tk.Position.Column, true) {
				return nil, tooDeep(tk)
			}
		case token.MappingKeyType, token.MappingValueType:
			keys++
			if keys > MaxKeys {
				p := tokenPos(tk)
				return nil, &Error{File: file, Line: p.line, Col: p.col,
					Msg: fmt.Sprintf("more than %d keys (sshq's limit; a task file has tens): is this the right file?", MaxKeys)}
			}
			if flow > 0 {
				break
			}
			col := tk.Position.Column
			if tk.Type == token.MappingValueType {
				col = keyColumn(prev, tk)
			}
			if !enter(col, false) {
				return nil, tooDeep(tk)
			}
		}
		prev = tk
	}
	return tokens, nil
}

// keyColumn is where the key that colon belongs to starts, including an
// anchor or tag written before it (&a key:), so that the keys of one
// mapping all count at one column. A colon starting its line (after a
// ? key) is its own column.
func keyColumn(key, colon *token.Token) int {
	if key == nil || key.Position == nil || key.Position.Line != colon.Position.Line {
		return colon.Position.Column
	}
	col := key.Position.Column
	for p := key.Prev; p != nil && p.Position != nil && p.Position.Line == key.Position.Line; p = p.Prev {
		if p.Type != token.AnchorType && p.Type != token.TagType {
			break
		}
		col = p.Position.Column
	}
	return col
}
