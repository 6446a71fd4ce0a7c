#!/usr/bin/env node
'use strict';
// A real SOFARPC (sofa-rpc-node) server serving com.alipay.sofa.rpc.test.ProtoService:1.0
// over Bolt with the protobuf codec. It answers Bolt v1 and v2 (with or without CRC)
// alike: sofa-bolt-node writes each response in the protocol of its request.
//
//   node echo_server.js [--port N] [--proto FILE] [--verbose]
//
// --port 0 picks a free port. Once listening it prints exactly one line: LISTENING <port>.
// SIGTERM / SIGINT close the server and exit 0.

const bolt = require('sofa-bolt-node');
const { RpcServer } = require('sofa-rpc-node').server;
const { DEFAULT_PROTO, parseFlags, loadProto, makeLogger } = require('./common');

const flags = parseFlags(process.argv.slice(2), { port: '12200', proto: DEFAULT_PROTO, verbose: false });
const port = Number(flags.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('bad --port: ' + flags.port);
  process.exit(2);
}

const proto = loadProto(flags.proto);
bolt.setOptions({ proto }); // the decoder needs it to parse EchoRequest bodies
const logger = makeLogger(flags.verbose);

const server = new RpcServer({
  appName: 'dtx-interop-echo',
  logger,
  protocol: bolt,
  proto,
  codecType: 'protobuf',
  port,
});

const EchoRequest = proto.lookupType('com.alipay.sofa.rpc.test.EchoRequest');

server.addService({ interfaceName: 'com.alipay.sofa.rpc.test.ProtoService', version: '1.0' }, {
  async echoObj(req) {
    // sofa-bolt-node passes no argument at all when the body is empty, which is how any
    // proto3 encoder writes EchoRequest{name:"", group:A}; and it omits group when it is A.
    const { name, group } = EchoRequest.toObject(req || EchoRequest.create(), { enums: String, defaults: true });
    if (name === 'fail') {
      // An application error: sofa-rpc-node answers it with status SERVER_EXCEPTION (0x0002),
      // header sofa_head_response_error=true and the message as the UTF-8 body.
      throw new Error('echo failed for fail');
    }
    return { code: 200, message: 'hello ' + name + ', you are in ' + group };
  },
});

// RpcServer emits 'error' for each failed request (e.g. "not found service: ..."); without a
// listener sdk-base prints every one of them.
server.on('error', err => {
  if (flags.verbose) console.error('[echo_server] ' + (err && err.message));
});

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  setTimeout(() => process.exit(0), 3000).unref(); // never hang on a stuck connection
  try {
    await server.close();
  } catch (err) {
    console.error('[echo_server] close: ' + err.message);
  }
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.start().then(() => {
  process.stdout.write('LISTENING ' + server.publishPort + '\n');
}, err => {
  console.error('[echo_server] cannot listen on port ' + port + ': ' + err.message);
  process.exit(1);
});
