package main

// Local block-store commands: UnixFS import/export (as kubo's `ipfs add`
// builds files), CAR import, selector walks.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	unixfile "github.com/ipfs/boxo/ipld/unixfs/file"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	ihelper "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipldformat "github.com/ipfs/go-ipld-format"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	basicnode "github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	"github.com/ipld/go-ipld-prime/traversal/selector"
)

// cmdImport imports a file as UnixFS exactly like
// `ipfs add --chunker=size-N [--raw-leaves] --cid-version=V`:
// fixed-size chunker, balanced layout, 174 links per node, sha2-256.
func (n *node) cmdImport(ctx context.Context, c command) (map[string]any, error) {
	chunk := c.ChunkSize
	if chunk <= 0 {
		chunk = 262144
	}
	cidVer := 1
	if c.CidVer != nil {
		cidVer = *c.CidVer
	}
	rawLeaves := cidVer == 1 // kubo's default: raw leaves iff CIDv1
	if c.RawLeaves != nil {
		rawLeaves = *c.RawLeaves
	}
	maxLinks := ihelper.DefaultLinksPerBlock
	if c.MaxLinks > 0 {
		maxLinks = c.MaxLinks
	}
	prefix, err := merkledag.PrefixForCidVersion(cidVer)
	if err != nil {
		return nil, err
	}

	f, err := os.Open(c.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}

	buffered := ipldformat.NewBufferedDAG(ctx, n.dag)
	params := ihelper.DagBuilderParams{
		Maxlinks:   maxLinks,
		RawLeaves:  rawLeaves,
		CidBuilder: prefix,
		Dagserv:    buffered,
	}
	db, err := params.New(chunker.NewSizeSplitter(f, chunk))
	if err != nil {
		return nil, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return nil, err
	}
	if err := buffered.Commit(); err != nil {
		return nil, err
	}
	all, err := n.walk(ctx, nd.Cid(), nil)
	if err != nil {
		return nil, fmt.Errorf("walking imported dag: %w", err)
	}
	return map[string]any{"root": nd.Cid().String(), "size": fi.Size(), "blocks": len(all)}, nil
}

// cmdExport writes the UnixFS file under root to path.
func (n *node) cmdExport(ctx context.Context, c command) (map[string]any, error) {
	root, err := cid.Decode(c.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	nd, err := n.dag.Get(ctx, root)
	if err != nil {
		return nil, err
	}
	fnode, err := unixfile.NewUnixfsFile(ctx, n.dag, nd)
	if err != nil {
		return nil, err
	}
	file, ok := fnode.(files.File)
	if !ok {
		return nil, errors.New("root is not a UnixFS file")
	}
	defer file.Close()
	out, err := os.Create(c.Path)
	if err != nil {
		return nil, err
	}
	size, err := io.Copy(out, file)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"size": size}, nil
}

// cmdImportCar puts every block of a CARv1 (or CARv2-wrapped v1) file into
// the blockstore, checking each block against its CID.
func (n *node) cmdImportCar(ctx context.Context, c command) (map[string]any, error) {
	f, err := os.Open(c.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)

	roots, version, err := readCarHeader(r)
	if err != nil {
		return nil, err
	}
	if version == 2 {
		// CARv2: 40-byte header after the pragma: characteristics (16),
		// data offset (8), data size (8), index offset (8), little endian.
		var hdr [40]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("carv2 header: %w", err)
		}
		off := binary.LittleEndian.Uint64(hdr[16:24])
		size := binary.LittleEndian.Uint64(hdr[24:32])
		if _, err := f.Seek(int64(off), io.SeekStart); err != nil {
			return nil, err
		}
		r = bufio.NewReaderSize(io.LimitReader(f, int64(size)), 1<<20)
		if roots, version, err = readCarHeader(r); err != nil {
			return nil, err
		}
		if version != 1 {
			return nil, fmt.Errorf("carv2 inner version %d", version)
		}
	} else if version != 1 {
		return nil, fmt.Errorf("unsupported CAR version %d", version)
	}

	count := 0
	var batch []blocks.Block
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := n.bs.PutMany(ctx, batch)
		batch = batch[:0]
		return err
	}
	for {
		sec, err := readSection(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		nread, k, err := cid.CidFromBytes(sec)
		if err != nil {
			return nil, fmt.Errorf("block %d: cid: %w", count, err)
		}
		data := sec[nread:]
		chk, err := k.Prefix().Sum(data)
		if err != nil {
			return nil, err
		}
		if !chk.Equals(k) {
			return nil, fmt.Errorf("block %d: data does not match cid %s", count, k)
		}
		blk, err := blocks.NewBlockWithCid(data, k)
		if err != nil {
			return nil, err
		}
		batch = append(batch, blk)
		count++
		if len(batch) >= 256 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return map[string]any{"roots": cidStrings(roots), "blocks": count}, nil
}

// readSection reads one varint-length-prefixed CAR section.
func readSection(r *bufio.Reader) ([]byte, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("car section length: %w", err)
	}
	if l == 0 || l > 64<<20 {
		return nil, fmt.Errorf("car section length %d out of range", l)
	}
	buf := make([]byte, l)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("car section: %w", err)
	}
	return buf, nil
}

// readCarHeader reads the DAG-CBOR header {roots, version}. A CARv2 pragma
// ({version: 2}) has no roots.
func readCarHeader(r *bufio.Reader) ([]cid.Cid, int64, error) {
	hb, err := readSection(r)
	if err != nil {
		return nil, 0, fmt.Errorf("car header: %w", err)
	}
	nd, err := ipld.Decode(hb, dagcbor.Decode)
	if err != nil {
		return nil, 0, fmt.Errorf("car header: %w", err)
	}
	vn, err := nd.LookupByString("version")
	if err != nil {
		return nil, 0, fmt.Errorf("car header: no version")
	}
	version, err := vn.AsInt()
	if err != nil {
		return nil, 0, fmt.Errorf("car header version: %w", err)
	}
	var roots []cid.Cid
	if rn, err := nd.LookupByString("roots"); err == nil {
		it := rn.ListIterator()
		for it != nil && !it.Done() {
			_, v, err := it.Next()
			if err != nil {
				return nil, 0, err
			}
			l, err := v.AsLink()
			if err != nil {
				return nil, 0, fmt.Errorf("car root: %w", err)
			}
			roots = append(roots, l.(cidlink.Link).Cid)
		}
	}
	return roots, version, nil
}

// walk traverses the DAG under root with the selector (nil = explore-all
// recursive) using the same node prototype chooser as graphsync, and returns
// every block loaded, in order. A missing block is an error.
func (n *node) walk(ctx context.Context, root cid.Cid, sel datamodel.Node) ([]cid.Cid, error) {
	if sel == nil {
		var err error
		if sel, err = parseSelector(nil); err != nil {
			return nil, err
		}
	}
	compiled, err := selector.CompileSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	var loaded []cid.Cid
	lsys := n.lsys
	inner := lsys.StorageReadOpener
	lsys.StorageReadOpener = func(lctx ipld.LinkContext, l ipld.Link) (io.Reader, error) {
		r, err := inner(lctx, l)
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", l, err)
		}
		loaded = append(loaded, l.(cidlink.Link).Cid)
		return r, nil
	}
	chooser := dagpb.AddSupportToChooser(basicnode.Chooser)
	rootLink := cidlink.Link{Cid: root}
	lctx := ipld.LinkContext{Ctx: ctx}
	proto, err := chooser(rootLink, lctx)
	if err != nil {
		return nil, err
	}
	rootNode, err := lsys.Load(lctx, rootLink, proto)
	if err != nil {
		return nil, err
	}
	err = traversal.Progress{Cfg: &traversal.Config{
		Ctx:                            ctx,
		LinkSystem:                     lsys,
		LinkTargetNodePrototypeChooser: chooser,
	}}.WalkAdv(rootNode, compiled, func(traversal.Progress, datamodel.Node, traversal.VisitReason) error { return nil })
	if err != nil {
		return loaded, err
	}
	return loaded, nil
}

// cmdDeleteAll removes every block from the blockstore.
func (n *node) cmdDeleteAll(ctx context.Context) (map[string]any, error) {
	ch, err := n.bs.AllKeysChan(ctx)
	if err != nil {
		return nil, err
	}
	var keys []cid.Cid
	for k := range ch {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := n.bs.DeleteBlock(ctx, k); err != nil {
			return nil, err
		}
	}
	return map[string]any{"deleted": len(keys)}, nil
}
