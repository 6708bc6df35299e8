// Package gopeerkit is the plumbing our Go interop peers (interop/go-peer on
// go-data-transfer v2, interop/go-peer-v1 on v1.15) share: the single stdout
// writer with its unbounded queue, and the loop that reads one JSON command per
// stdin line and answers each with exactly one result line. Standard library
// only, so peers built on very different library generations can both use it.
package gopeerkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"sync"
	"time"
)

// Writer serialises every stdout line through one goroutine. Emit never
// blocks on I/O: it appends to an unbounded queue, so it is safe to call from
// go-data-transfer's event callback and from graphsync hooks.
type Writer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []func() any // built lazily on the writer goroutine
	closed bool
	done   chan struct{}
}

// RawLine is a line already encoded as JSON; the writer prints it as it is.
type RawLine []byte

// NewWriter starts the writer goroutine on w.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{done: make(chan struct{})}
	wr.cond = sync.NewCond(&wr.mu)
	go wr.run(bufio.NewWriter(w))
	return wr
}

func (w *Writer) run(bw *bufio.Writer) {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.cond.Wait()
		}
		if len(w.queue) == 0 && w.closed {
			w.mu.Unlock()
			return
		}
		item := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.mu.Unlock()

		var line []byte
		var err error
		if r, ok := item().(RawLine); ok {
			line = r
		} else {
			line, err = json.Marshal(item())
		}
		if err != nil {
			line, _ = json.Marshal(map[string]any{"type": "error", "error": "marshal: " + err.Error()})
		}
		bw.Write(line)
		bw.WriteByte('\n')
		bw.Flush()
	}
}

// EmitLazy queues a line whose content is computed on the writer goroutine.
func (w *Writer) EmitLazy(f func() any) {
	w.mu.Lock()
	if !w.closed {
		w.queue = append(w.queue, f)
		w.cond.Signal()
	}
	w.mu.Unlock()
}

// Emit queues a line: v encoded as JSON (or a RawLine as it is).
func (w *Writer) Emit(v any) { w.EmitLazy(func() any { return v }) }

// EmitResult prints {"type":"result","id":N,"ok":true,...fields} or
// {"type":"result","id":N,"ok":false,"error":"..."}.
func (w *Writer) EmitResult(id int64, fields map[string]any, err error) {
	head := fmt.Sprintf(`{"type":"result","id":%d,"ok":%t`, id, err == nil)
	if err != nil {
		msg, _ := json.Marshal(err.Error())
		w.Emit(RawLine(head + `,"error":` + string(msg) + `}`))
		return
	}
	if len(fields) == 0 {
		w.Emit(RawLine(head + "}"))
		return
	}
	w.EmitLazy(func() any {
		body, merr := json.Marshal(fields)
		if merr != nil {
			msg, _ := json.Marshal("marshal result: " + merr.Error())
			return RawLine(fmt.Sprintf(`{"type":"result","id":%d,"ok":false,"error":%s}`, id, msg))
		}
		return RawLine(head + "," + string(body[1:]))
	})
}

// Close flushes everything queued so far and stops the writer.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
}

// Parsed is one command line, decoded by the peer: its id and name, and how to
// run it.
type Parsed struct {
	ID   int64
	Name string
	Run  func() (map[string]any, error)
}

// Serve handles stdin lines until EOF. Each command runs on its own goroutine,
// so slow ones (a pull to an unreachable peer) do not hold up the rest, and
// gets exactly one result line. "shutdown" lets in-flight commands answer (up
// to 5 s), calls shutdown, answers, flushes and exits the process.
func Serve(r io.Reader, out *Writer, parse func(line []byte) (Parsed, error), shutdown func(), exit func()) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var wg sync.WaitGroup
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		cmd, err := parse(line)
		if err != nil {
			out.EmitResult(cmd.ID, nil, err)
			continue
		}
		if cmd.Name == "shutdown" {
			waitTimeout(&wg, 5*time.Second)
			shutdown()
			out.EmitResult(cmd.ID, map[string]any{}, nil)
			out.Close()
			exit()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cmd.Run()
			out.EmitResult(cmd.ID, res, err)
		}()
	}
	if err := sc.Err(); err != nil {
		log.Printf("stdin: %s", err)
	}
	waitTimeout(&wg, 5*time.Second)
}

// waitTimeout waits for wg, but at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
