// ONNX Runtime (CPU, npm onnxruntime-node) peer of bench/extract_engine:
// runs MODEL on random BATCH x 3 x 224 x 224 f32 batches with THREADS
// intra-op threads (one inter-op, sequential execution, all graph
// optimizations), warms up, then times runs for at least SECONDS in
// windows of at least SECONDS/5, like bench/extract_engine. Start-up is
// the time from creating the session (loading and optimising the model) to
// the end of its first batch. Prints:
//     images/s <best window> mean <all windows> runs <n> seconds <s> startup <s> ort <version>
// usage: NODE_PATH=DIR/node_modules node peer_ort.js MODEL BATCH THREADS SECONDS
//
// Whole-process mode, `peer_ort.js whole N MODEL BATCH THREADS`: create the
// session, run N images (one batch of random preprocessed tensors, made
// once, no decoding) in batches of BATCH (a last partial batch at its own
// size), exit; the caller times the process. Prints:
//     whole <N> session <s> run <s> ort <version>
const ort = require('onnxruntime-node');

function randomBatch(n) {
	const data = new Float32Array(n * 3 * 224 * 224);
	let s = 12345;
	for (let i = 0; i < data.length; i++) {
		s = (s * 1103515245 + 12345) % 2147483648;
		data[i] = s / 2147483648 * 2 - 1;
	}
	return data;
}

function sessionOptions(threads) {
	return {
		intraOpNumThreads: parseInt(threads), interOpNumThreads: 1, executionMode: 'sequential',
		graphOptimizationLevel: 'all', executionProviders: ['cpu'],
	};
}

async function whole(n, model, batch, threads) {
	const s0 = process.hrtime.bigint();
	const session = await ort.InferenceSession.create(model, sessionOptions(threads));
	const s1 = process.hrtime.bigint();
	const data = randomBatch(batch); // made once: the images' content does not change the speed
	for (let done = 0; done < n;) {
		const b = Math.min(batch, n - done);
		const x = new ort.Tensor('float32', data.subarray(0, b * 3 * 224 * 224), [b, 3, 224, 224]);
		await session.run({ [session.inputNames[0]]: x });
		done += b;
	}
	const s2 = process.hrtime.bigint();
	console.log(`whole ${n} session ${(Number(s1 - s0) / 1e9).toFixed(3)} run ${(Number(s2 - s1) / 1e9).toFixed(3)} ort ${ort.env.versions.common}`);
}

async function main() {
	if (process.argv[2] === 'whole') {
		const [n, model, batch, threads] = process.argv.slice(3);
		return whole(parseInt(n), model, parseInt(batch), threads);
	}
	const [model, batch, threads, seconds] = process.argv.slice(2);
	const batchN = parseInt(batch), secs = parseFloat(seconds);
	const data = randomBatch(batchN);
	const s0 = process.hrtime.bigint();
	const session = await ort.InferenceSession.create(model, sessionOptions(threads));
	const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, [batchN, 3, 224, 224]) };
	await session.run(feeds);
	const startup = Number(process.hrtime.bigint() - s0) / 1e9;
	const t0 = process.hrtime.bigint();
	let warm = 1;
	while (warm < 2 || Number(process.hrtime.bigint() - t0) / 1e9 < 1.0) {
		await session.run(feeds);
		warm++;
	}
	let runs = 0, total = 0, best = 0;
	while (total < secs) {
		const w0 = process.hrtime.bigint();
		let n = 0, el = 0;
		for (; n < 1 || el < secs / 5; n++) {
			await session.run(feeds);
			el = Number(process.hrtime.bigint() - w0) / 1e9;
		}
		best = Math.max(best, n * batchN / el);
		total += el;
		runs += n;
	}
	console.log(`images/s ${best.toFixed(3)} mean ${(runs * batchN / total).toFixed(3)} runs ${runs} seconds ${total.toFixed(2)} startup ${startup.toFixed(3)} ort ${ort.env.versions.common}`);
}

main().catch((e) => { console.error('peer_ort: ' + e.message); process.exit(1); });
