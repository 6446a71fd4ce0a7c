#!/usr/bin/env node
'use strict';
// A real SOFARPC (sofa-rpc-node) client calling ProtoService.echoObj with the protobuf codec.
//
//   node echo_client.js --address host:port [--protocol v1|v2] [--timeout MS] [--proto FILE]
//
// v1 = Bolt v1 (proto 0x01). v2 = Bolt v2 with ver1=2 and the CRC32 switch on (proto 0x02,
// switch 0x01, CRC32 after the body), like the golden v2 frames. sofa-rpc-node has no option
// for v2; the client's encoder (sofa-bolt-node ProtocolEncoder) is switched with its
// protocolType / boltVersion / crcEnable properties, see boltProtocol() below.
//
// Prints `ok <case>` or `FAIL <case>: <details>` per case, then `N passed, M failed`;
// exits 1 if any case failed.

const bolt = require('sofa-bolt-node');
const { RpcClient } = require('sofa-rpc-node').client;
const { DEFAULT_PROTO, parseFlags, loadProto, makeLogger } = require('./common');

const SERVICE = 'com.alipay.sofa.rpc.test.ProtoService';

const flags = parseFlags(process.argv.slice(2), {
  address: '127.0.0.1:12200', protocol: 'v1', timeout: '3000', proto: DEFAULT_PROTO, verbose: false,
});
if (![ 'v1', 'v2' ].includes(flags.protocol)) {
  console.error('--protocol must be v1 or v2');
  process.exit(2);
}
const timeout = Number(flags.timeout);

// sofa-bolt-node reads `proto` and `codecType` from its global options when it builds each
// connection's encoder/decoder (codecType also sets the codec byte of heartbeats).
bolt.setOptions({ proto: loadProto(flags.proto), codecType: 'protobuf' });

function boltProtocol(version) {
  if (version === 'v1') return bolt; // ProtocolEncoder defaults: bolt, boltVersion 1, no CRC
  return Object.assign({}, bolt, {
    encoder(options) {
      const encoder = bolt.encoder(options);
      encoder.protocolType = 'bolt2'; // proto byte 0x02
      encoder.boltVersion = 2; // ver1 byte
      encoder.crcEnable = true; // switch byte 0x01 + trailing CRC32
      return encoder;
    },
  });
}

const client = new RpcClient({
  logger: makeLogger(flags.verbose),
  protocol: boltProtocol(flags.protocol),
  responseTimeout: timeout,
});
client.on('error', err => {
  if (flags.verbose) console.error('[echo_client] ' + err.message);
});

function consumer(version) {
  return client.createConsumer({ interfaceName: SERVICE, version, serverHost: flags.address });
}

async function call(version, request) {
  const c = consumer(version);
  await c.ready();
  return c.invoke('echoObj', [ request ], { responseTimeout: timeout });
}

// A server-reported error (any non-SUCCESS Bolt status) reaches the caller as a plain Error
// with resultCode '01'; transport failures have other names and resultCode '02'/'03'/'04'.
function expectError(err, needle) {
  if (!err) throw new Error('expected an error, got a result');
  if (flags.verbose) console.error(`[echo_client] ${err.name} resultCode=${err.resultCode}: ${err.message}`);
  if (!String(err.message).includes(needle)) {
    throw new Error(`${err.name} ${JSON.stringify(err.message)} lacks ${JSON.stringify(needle)}`);
  }
  if (err.resultCode !== '01') throw new Error(`${err.name} ${JSON.stringify(err.message)}: resultCode ${err.resultCode}, want 01`);
}

const cases = [
  [ 'echo', async () => {
    const res = await call('1.0', { name: 'gxcsoccer', group: 'B' });
    const got = res.toObject({ defaults: true });
    const want = { code: 200, message: 'hello gxcsoccer, you are in B' };
    if (got.code !== want.code || got.message !== want.message) {
      throw new Error('got ' + JSON.stringify(got) + ', want ' + JSON.stringify(want));
    }
  } ],
  [ 'app-error', async () => {
    // sofa-rpc-node reports it as Error("Error: echo failed for fail"), resultCode '01'.
    let err = null;
    try { await call('1.0', { name: 'fail' }); } catch (e) { err = e; }
    expectError(err, 'echo failed for fail');
  } ],
  [ 'unknown-service', async () => {
    // sofa-rpc-node reports Error("Error: not found service: ...ProtoService:2.0").
    let err = null;
    try { await call('2.0', { name: 'x' }); } catch (e) { err = e; }
    expectError(err, 'not found service: ' + SERVICE + ':2.0');
  } ],
];

async function main() {
  let passed = 0;
  let failed = 0;
  for (const [ name, run ] of cases) {
    try {
      await run();
      passed++;
      console.log('ok ' + name);
    } catch (err) {
      failed++;
      console.log('FAIL ' + name + ': ' + (err && err.name ? err.name + ': ' : '') + (err && err.message));
    }
  }
  console.log(passed + ' passed, ' + failed + ' failed');
  await Promise.race([ client.close(), new Promise(resolve => setTimeout(resolve, 1000)) ]);
  process.exit(failed ? 1 : 0);
}

main().catch(err => {
  console.log('FAIL client: ' + err.stack);
  console.log('0 passed, ' + cases.length + ' failed');
  process.exit(1);
});
