// tests/ort_run.js - ONNX Runtime's side of tests/cli/export.sh.
//
//   node ort_run.js run MODEL IN.npy OUT.npy BATCH
//       run MODEL (npm onnxruntime-node, CPU) on the rows of IN.npy (N x 3*H*W
//       float32, square images) in batches of BATCH rows (the last one may be
//       smaller), check the model's input is "input" and its output
//       "embedding" (B x D for every batch), and write the N x D output to OUT.npy
//   node ort_run.js cmp A.npy B.npy MINCOS [MAXABS]
//       compare two N x D matrices row by row: print the smallest cosine and
//       the largest absolute difference; exit 1 if the cosine is below MINCOS
//       or the difference above MAXABS
//
// Needs NODE_PATH to hold onnxruntime-node (tests/ort_setup.sh) for `run`.
// Exit 0 on success, 1 on a failed check or error.
'use strict';
const fs = require('fs');

// A 2-D little-endian float32 .npy (versions 1.0 to 3.0, C order).
function readNpy(path) {
	const b = fs.readFileSync(path);
	if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not an .npy file`);
	const major = b[6];
	const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
	const start = major === 1 ? 10 : 12;
	const header = b.toString('latin1', start, start + hlen);
	const descr = /'descr':\s*'([^']*)'/.exec(header);
	const shape = /'shape':\s*\((\d+),\s*(\d+)\)/.exec(header);
	if (!descr || descr[1] !== '<f4' || !shape || /'fortran_order':\s*True/.test(header))
		throw new Error(`${path}: not a 2-D little-endian float32 C-order matrix: ${header.trim()}`);
	const rows = parseInt(shape[1]), cols = parseInt(shape[2]);
	const off = start + hlen;
	if (b.length - off !== rows * cols * 4) throw new Error(`${path}: ${b.length - off} data bytes for ${rows} x ${cols}`);
	const data = new Float32Array(rows * cols);
	for (let i = 0; i < rows * cols; i++) data[i] = b.readFloatLE(off + 4 * i);
	return { rows, cols, data };
}

function writeNpy(path, rows, cols, data) {
	let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
	while ((10 + header.length + 1) % 64) header += ' ';
	header += '\n';
	const b = Buffer.alloc(10 + header.length + rows * cols * 4);
	b.write('\x93NUMPY', 0, 'latin1');
	b[6] = 1;
	b[7] = 0;
	b.writeUInt16LE(header.length, 8);
	b.write(header, 10, 'latin1');
	for (let i = 0; i < rows * cols; i++) b.writeFloatLE(data[i], 10 + header.length + 4 * i);
	fs.writeFileSync(path, b);
}

async function run(model, inPath, outPath, batch) {
	const ort = require('onnxruntime-node');
	const x = readNpy(inPath);
	const side = Math.round(Math.sqrt(x.cols / 3));
	if (3 * side * side !== x.cols) throw new Error(`${inPath}: rows of ${x.cols} are not 3 x S x S images`);
	const s = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
	if (s.inputNames.length !== 1 || s.inputNames[0] !== 'input') throw new Error(`inputs are ${s.inputNames}, not [input]`);
	if (s.outputNames.length !== 1 || s.outputNames[0] !== 'embedding')
		throw new Error(`outputs are ${s.outputNames}, not [embedding]`);
	let out = null, dim = 0;
	for (let r = 0; r < x.rows; r += batch) {
		const n = Math.min(batch, x.rows - r);
		const feed = new ort.Tensor('float32', x.data.slice(r * x.cols, (r + n) * x.cols), [n, 3, side, side]);
		const y = (await s.run({ input: feed })).embedding;
		if (y.type !== 'float32' || y.dims.length !== 2 || y.dims[0] !== n)
			throw new Error(`batch of ${n}: output is ${y.type} [${y.dims}]`);
		if (!out) {
			dim = y.dims[1];
			out = new Float32Array(x.rows * dim);
		}
		out.set(y.data, r * dim);
	}
	writeNpy(outPath, x.rows, dim, out);
	console.log(`ort ${ort.env.versions.common}: ${x.rows} x ${dim} in batches of ${batch}`);
}

function cmp(aPath, bPath, minCos, maxAbs) {
	const a = readNpy(aPath), b = readNpy(bPath);
	if (a.rows !== b.rows || a.cols !== b.cols) throw new Error(`shapes differ: ${a.rows}x${a.cols} vs ${b.rows}x${b.cols}`);
	let worstCos = Infinity, worstAbs = 0;
	for (let r = 0; r < a.rows; r++) {
		let ab = 0, aa = 0, bb = 0;
		for (let c = 0; c < a.cols; c++) {
			const u = a.data[r * a.cols + c], v = b.data[r * a.cols + c];
			ab += u * v;
			aa += u * u;
			bb += v * v;
			worstAbs = Math.max(worstAbs, Math.abs(u - v));
		}
		const cos = aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : (aa === bb ? 1 : 0);
		worstCos = Math.min(worstCos, Number.isNaN(cos) ? -Infinity : cos);
	}
	console.log(`rows ${a.rows} dim ${a.cols} min cosine ${worstCos.toFixed(8)} max abs diff ${worstAbs.toExponential(3)}`);
	return worstCos >= minCos && !(maxAbs !== undefined && !(worstAbs <= maxAbs));
}

async function main() {
	const [mode, ...args] = process.argv.slice(2);
	if (mode === 'run' && args.length === 4) {
		await run(args[0], args[1], args[2], parseInt(args[3]));
	} else if (mode === 'cmp' && (args.length === 3 || args.length === 4)) {
		if (!cmp(args[0], args[1], parseFloat(args[2]), args.length === 4 ? parseFloat(args[3]) : undefined))
			process.exit(1);
	} else {
		console.error('usage: ort_run.js run MODEL IN.npy OUT.npy BATCH | cmp A.npy B.npy MINCOS [MAXABS]');
		process.exit(1);
	}
}

main().catch((e) => {
	console.error('ort_run: ' + e.message);
	process.exit(1);
});
