// s3rver for the tests: `node s3rver-serve.cjs ADDRESS PORT DIRECTORY`.
// Unlike s3rver's own command line, an error that escapes a request (a client
// that resets its connection at the wrong moment, say) is written to the log
// with its stack instead of ending the process: a real S3 server does not stop
// serving every other client because of one. Every such error is in the log
// (scripts/services/s3rver.sh prints it when the server is stopped).
'use strict';
const S3rver = require('s3rver');

const [address, port, directory] = process.argv.slice(2);
if (!address || !port || !directory) {
  console.error('usage: node s3rver-serve.cjs ADDRESS PORT DIRECTORY');
  process.exit(2);
}
process.on('uncaughtException', (err) => {
  console.error(`${new Date().toISOString()} s3rver: uncaught exception (still serving):`, err && err.stack ? err.stack : err);
});
process.on('unhandledRejection', (err) => {
  console.error(`${new Date().toISOString()} s3rver: unhandled rejection (still serving):`, err && err.stack ? err.stack : err);
});
const server = new S3rver({ address, port: Number(port), directory, silent: true });
server.run().then(
  (where) => console.log(`S3rver listening on ${where.address}:${where.port}`),
  (err) => {
    console.error('s3rver could not start:', err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().finally(() => process.exit(0)));
}
