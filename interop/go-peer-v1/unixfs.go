package main

// Local block-store commands: UnixFS import/export (as kubo's `ipfs add`
// builds files, here with the go-unixfs v0.3.1 importer of the Lotus era)
// and selector walks.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
	chunker "github.com/ipfs/go-ipfs-chunker"
	files "github.com/ipfs/go-ipfs-files"
	ipldformat "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/go-merkledag"
	unixfile "github.com/ipfs/go-unixfs/file"
	"github.com/ipfs/go-unixfs/importer/balanced"
	ihelper "github.com/ipfs/go-unixfs/importer/helpers"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	basicnode "github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	"github.com/ipld/go-ipld-prime/traversal/selector"
)

// cmdImport imports a file like `ipfs add --chunker=size-N [--raw-leaves]
// --cid-version=V`: fixed-size chunker, balanced layout, 174 links per node,
// sha2-256.
func (n *node) cmdImport(ctx context.Context, c command) (map[string]any, error) {
	chunk := c.ChunkSize
	if chunk <= 0 {
		chunk = 262144
	}
	cidVer := 1
	if c.CidVer != nil {
		cidVer = *c.CidVer
	}
	rawLeaves := cidVer == 1
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

// walk traverses the DAG under root with the selector (nil = explore-all
// recursive) with graphsync's node prototype chooser and returns every block
// loaded, in order. A missing block is an error.
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
	return loaded, err
}
