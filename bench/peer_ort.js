// ONNX Runtime (CPU, npm onnxruntime-node) peer of bench/extract_engine:
// runs MODEL on random BATCH x 3 x 224 x 224 f32 batches with THREADS
// intra-op threads (one inter-op, sequential execution, all graph
// optimizations), warms up, then times runs for at least SECONDS in
// windows of at least SECONDS/5, like bench/extract_engine. Start-up is
// the time from creating the session (loading and optimising the model) to
// the end of its first batch. Prints:
//     images/s <best window> mean <all windows> runs <n> seconds <s> startup <s> ort <version>
// usage: NODE_PATH=DIR/node_modules node peer_ort.js MODEL BATCH THREADS SECONDS
const ort = require('onnxruntime-node');

async function main() {
	const [model, batch, threads, seconds] = process.argv.slice(2);
	const batchN = parseInt(batch), secs = parseFloat(seconds);
	const data = new Float32Array(batchN * 3 * 224 * 224);
	let s = 12345;
	for (let i = 0; i < data.length; i++) {
		s = (s * 1103515245 + 12345) % 2147483648;
		data[i] = s / 2147483648 * 2 - 1;
	}
	const s0 = process.hrtime.bigint();
	const session = await ort.InferenceSession.create(model, {
		intraOpNumThreads: parseInt(threads), interOpNumThreads: 1, executionMode: 'sequential',
		graphOptimizationLevel: 'all', executionProviders: ['cpu'],
	});
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
