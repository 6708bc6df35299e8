// Command go-retrieval is the Filecoin retrieval-market interop helper of
// rust-data-transfer:
//
//	go-retrieval vectors                 golden dag-cbor encodings of the
//	                                     go-retrieval-types vouchers
//	go-retrieval decode [--reencode] TYPE HEX
//	                                     decode a voucher with go-retrieval-types
//	go-retrieval provide --key HEX --file PATH [...]
//	                                     a free (unpaid) graphsync retrieval
//	                                     provider on go-data-transfer v2, as
//	                                     Boost serves lassie
//
// Results are JSON lines on stdout; logs go to stderr. See README.md.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

const usage = `usage:
  go-retrieval vectors
  go-retrieval decode [--reencode] TYPE HEX
      TYPE: RetrievalDealProposal/1 | RetrievalDealResponse/1 | RetrievalDealPayment/1
            (or DealProposal | DealResponse | DealPayment)
  go-retrieval provide --key HEX --file PATH [--listen /ip4/127.0.0.1/tcp/0]
                       [--reject MSG] [--funds-needed N] [--no-complete] [--log-level LEVEL]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "vectors":
		if err := printVectors(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "vectors:", err)
			os.Exit(1)
		}
	case "decode":
		os.Exit(runDecode(os.Args[2:]))
	case "provide":
		os.Exit(runProvide(os.Args[2:]))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// runDecode: `decode [--reencode] TYPE HEX` prints the fields object (with
// --reencode: {"fields":{..},"hex":"<Go's re-encoding>"}), or the error on
// stderr and exit status 1.
func runDecode(args []string) int {
	reencode := false
	if len(args) > 0 && args[0] == "--reencode" {
		reencode = true
		args = args[1:]
	}
	if len(args) != 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	typ, ok := typeNames[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "decode: unknown type %q\n", args[0])
		return 2
	}
	data, err := hex.DecodeString(strings.TrimSpace(args[1]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "decode: hex:", err)
		return 1
	}
	fields, err := decodeVoucher(typ, data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		return 1
	}
	var out any = fields
	if reencode {
		again, err := reencodeVoucher(typ, data)
		if err != nil {
			fmt.Fprintln(os.Stderr, "decode: re-encode:", err)
			return 1
		}
		out = map[string]any{"fields": fields, "hex": hex.EncodeToString(again)}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		return 1
	}
	return 0
}
