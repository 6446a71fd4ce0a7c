#!/usr/bin/env node
'use strict';
// Probes behind NOTES.md. Not a test: it prints what sofa-rpc-node / sofa-bolt-node do.
//
//   node probe.js client   fake Bolt server (hand-made frames) <- real sofa-rpc-node client:
//                          what the caller sees for each response status / header / body
//   node probe.js server   raw frames -> real echo_server.js: answers, heartbeats, which
//                          request headers the server needs, what closes the connection

const net = require('net');
const path = require('path');
const { spawn } = require('child_process');
const { crc32 } = require('zlib');
const bolt = require('sofa-bolt-node');
const { RpcClient } = require('sofa-rpc-node').client;
const { splitter, decodeFrame, describe } = require('./bolt_dump');
const { DEFAULT_PROTO, loadProto, makeLogger } = require('./common');

const SERVICE = 'com.alipay.sofa.rpc.test.ProtoService';
const REQ_CLASS = 'com.alipay.sofa.rpc.core.request.SofaRequest';
const RES_CLASS = 'com.alipay.sofa.rpc.core.response.SofaResponse';
const proto = loadProto(DEFAULT_PROTO);
const EchoRequest = proto.lookupType(SERVICE.replace(/\.ProtoService$/, '.EchoRequest'));
const EchoResponse = proto.lookupType(SERVICE.replace(/\.ProtoService$/, '.EchoResponse'));

function headerMap(pairs) {
  return Buffer.concat(pairs.map(([ k, v ]) => {
    const kb = Buffer.from(k);
    const vb = v == null ? null : Buffer.from(v);
    const b = Buffer.alloc(8 + kb.length + (vb ? vb.length : 0));
    b.writeInt32BE(kb.length, 0);
    kb.copy(b, 4);
    b.writeInt32BE(v == null ? -1 : vb.length, 4 + kb.length);
    if (vb) vb.copy(b, 8 + kb.length);
    return b;
  }));
}

// Hand-made frame. f: { v2, ver1, crc, type (0 response / 1 request), cmdcode, id, codec,
// timeout, status, className, header: [[k, v]], content: Buffer, badCrc }
function encodeFrame(f) {
  const cls = Buffer.from(f.className || '');
  const hdr = headerMap(f.header || []);
  const body = f.content || Buffer.alloc(0);
  const head = [ f.v2 ? 0x02 : 0x01 ];
  if (f.v2) head.push(f.ver1 == null ? 2 : f.ver1);
  head.push(f.type, f.cmdcode >> 8, f.cmdcode & 0xff, 0x01);
  const fixed = Buffer.alloc(4);
  fixed.writeUInt32BE(f.id);
  head.push(...fixed, f.codec == null ? 11 : f.codec);
  if (f.v2) head.push(f.crc ? 0x01 : 0x00);
  const tail = Buffer.alloc(f.type === 0 ? 10 : 12);
  let o = 0;
  if (f.type === 0) { tail.writeUInt16BE(f.status || 0, 0); o = 2; } else { tail.writeUInt32BE(f.timeout == null ? 3000 : f.timeout, 0); o = 4; }
  tail.writeUInt16BE(cls.length, o);
  tail.writeUInt16BE(hdr.length, o + 2);
  tail.writeUInt32BE(body.length, o + 4);
  let frame = Buffer.concat([ Buffer.from(head), tail, cls, hdr, body ]);
  if (f.v2 && f.crc) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE((crc32(frame) ^ (f.badCrc ? 1 : 0)) >>> 0);
    frame = Buffer.concat([ frame, c ]);
  }
  return frame;
}

const ERR_TRUE = [[ 'sofa_head_response_error', 'true' ]];
const ERR_FALSE = [[ 'sofa_head_response_error', 'false' ]];
const okBody = EchoResponse.encode({ code: 200, message: 'fine' }).finish();

// name -> response fields (null: send nothing)
const clientScenarios = {
  'status2-body': { status: 2, header: ERR_TRUE, content: Buffer.from('boom') },
  'status2-empty': { status: 2, header: ERR_TRUE },
  'status1-body': { status: 1, header: ERR_TRUE, content: Buffer.from('boom') },
  'status6-body': { status: 6, content: Buffer.from('no processor for x') },
  'status6-empty': { status: 6 },
  'status4-empty': { status: 4 },
  'status7-empty': { status: 7 },
  'status9-body': { status: 9, content: Buffer.from('codec broke') },
  'status0-errtrue-pbbody': { status: 0, header: ERR_TRUE, content: okBody },
  'status0-noheader': { status: 0, content: okBody },
  'status0-emptybody': { status: 0, header: ERR_FALSE },
  'status0-errtrue-textbody': { status: 0, header: ERR_TRUE, content: Buffer.from('boom') },
  'status0-noclass': { status: 0, className: '', header: ERR_FALSE, content: okBody },
  'status0-otherclass': { status: 0, className: 'java.lang.String', header: ERR_FALSE, content: okBody },
  'status2-otherclass': { status: 2, className: 'java.lang.String', header: ERR_TRUE, content: Buffer.from('boom') },
  'bad-crc': { status: 0, header: ERR_FALSE, content: okBody, badCrc: true }, // v2 only
  'reply-v1': { v2: false, status: 0, header: ERR_FALSE, content: okBody },
  'reply-v2-nocrc': { v2: true, ver1: 2, crc: false, status: 0, header: ERR_FALSE, content: okBody },
  'reply-v2-crc': { v2: true, ver1: 2, crc: true, status: 0, header: ERR_FALSE, content: okBody },
  'server-heartbeat': { status: 0, header: ERR_FALSE, content: okBody, heartbeatFirst: true },
  'no-response': null,
};

function describeError(err) {
  return JSON.stringify({ name: err.name, message: err.message, resultCode: err.resultCode, stack: err.stack === '' ? '' : '(non-empty)' });
}

async function probeClient(version) {
  const seen = []; // frames the fake server got
  const server = net.createServer(sock => {
    sock.on('error', () => {});
    sock.on('data', splitter(buf => {
      const req = decodeFrame(buf);
      seen.push(req.kind);
      if (req.kind !== 'request') return;
      const name = EchoRequest.decode(req.content).name;
      const s = clientScenarios[name];
      if (!s) return;
      if (s.heartbeatFirst) sock.write(encodeFrame({ v2: buf[0] === 2, ver1: req.ver1, crc: req.switch === 1, type: 1, cmdcode: 0, id: 0x70, timeout: 3000 }));
      sock.write(encodeFrame(Object.assign({
        v2: buf[0] === 2, ver1: req.ver1, crc: req.switch === 1, type: 0, cmdcode: 2,
        id: req.requestId, codec: 11, className: RES_CLASS,
      }, s)));
    }));
  });
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;

  bolt.setOptions({ proto, codecType: 'protobuf' });
  const protocol = version === 'v1' ? bolt : Object.assign({}, bolt, {
    encoder(o) { const e = bolt.encoder(o); e.protocolType = 'bolt2'; e.boltVersion = 2; e.crcEnable = true; return e; },
  });
  console.log(`== client probes, ${version}: what a sofa-rpc-node caller gets back`);
  for (const name of Object.keys(clientScenarios)) {
    const client = new RpcClient({ logger: makeLogger(false), protocol });
    client.on('error', () => {});
    const consumer = client.createConsumer({ interfaceName: SERVICE, serverHost: '127.0.0.1:' + port });
    await consumer.ready();
    let line;
    try {
      const res = await consumer.invoke('echoObj', [{ name, group: 'A' }], { responseTimeout: 500 });
      line = 'result ' + JSON.stringify(res && res.toObject ? res.toObject() : res);
    } catch (err) {
      line = 'error ' + describeError(err);
    }
    console.log(`${name}: ${line}`);
    await client.close();
  }
  console.log('frames the fake server received: ' + seen.join(' '));
  server.close();
}

// ---- server probes ----

function request(opts) {
  const o = Object.assign({ v2: false, ver1: 2, crc: true, id: 1, service: SERVICE, version: '1.0', method: 'echoObj', name: 'probe' }, opts);
  const sig = o.service + ':' + o.version;
  let header = [[ 'service', sig ], [ 'sofa_head_method_name', o.method ], [ 'sofa_head_target_app', '' ], [ 'sofa_head_target_service', sig ]];
  if (o.drop) header = header.filter(([ k ]) => !o.drop.includes(k));
  return encodeFrame({
    v2: o.v2, ver1: o.ver1, crc: o.crc, badCrc: o.badCrc, type: 1, cmdcode: 1, id: o.id,
    codec: o.codec, timeout: o.timeout, className: o.className == null ? REQ_CLASS : o.className, header,
    content: o.content || EchoRequest.encode({ name: o.name, group: 1 }).finish(),
  });
}

function heartbeat(opts) {
  return encodeFrame(Object.assign({ type: 1, cmdcode: 0, id: 0x65, codec: 11, timeout: 3000 }, opts));
}

// Sends one frame on a fresh connection; resolves with the first answer or 'closed'/'silence'.
function exchange(port, frame, waitMs = 1500) {
  return new Promise(resolve => {
    const sock = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => { sock.destroy(); resolve('silence for ' + waitMs + 'ms'); }, waitMs);
    const done = v => { clearTimeout(timer); sock.destroy(); resolve(v); };
    sock.on('data', splitter(buf => done(describe(buf).text)));
    sock.on('close', () => done('connection closed by server, no answer'));
    sock.on('error', e => done('socket error ' + e.code));
    sock.write(frame);
  });
}

async function probeServer() {
  const child = spawn(process.execPath, [ path.join(__dirname, 'echo_server.js'), '--port', '0', '--verbose' ], { stdio: [ 'ignore', 'pipe', 'pipe' ] });
  let stderr = '';
  child.stderr.on('data', d => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', d => { const m = /LISTENING (\d+)/.exec(String(d)); if (m) resolve(Number(m[1])); });
    child.once('exit', code => reject(new Error('echo_server exited ' + code)));
  });
  const probes = {
    'v1 heartbeat': heartbeat({}),
    'v2 heartbeat (ver1 2, crc)': heartbeat({ v2: true, ver1: 2, crc: true }),
    'v1 ok': request({}),
    'v2 ver1=1 switch=0 (no crc)': request({ v2: true, ver1: 1, crc: false }),
    'v2 ver1=2 switch=0 (no crc)': request({ v2: true, ver1: 2, crc: false }),
    'v2 bad crc': request({ v2: true, badCrc: true }),
    'no `service` header': request({ drop: [ 'service' ] }),
    'no sofa_head_target_app': request({ drop: [ 'sofa_head_target_app' ] }),
    'only sofa_head_target_service + method': request({ drop: [ 'service', 'sofa_head_target_app' ] }),
    'no sofa_head_target_service': request({ drop: [ 'sofa_head_target_service' ] }),
    'no sofa_head_method_name': request({ drop: [ 'sofa_head_method_name' ] }),
    'method not in proto': request({ method: 'nope' }),
    'version not served (2.0)': request({ version: '2.0' }),
    'service not in proto': request({ service: 'com.example.Nope' }),
    'empty body': request({ content: Buffer.alloc(0) }),
    'class name empty': request({ className: '' }),
    'codec 1 (hessian2)': request({ codec: 1 }),
    'timeout 0': request({ timeout: 0 }),
    'app error': request({ name: 'fail' }),
  };
  console.log('== server probes: raw frames -> echo_server.js (each on a fresh connection)');
  for (const [ name, frame ] of Object.entries(probes)) {
    console.log(`-- ${name}\n   sent ${frame.toString('hex')}\n   got  ${await exchange(port, frame)}`);
  }
  child.kill('SIGTERM');
  await new Promise(resolve => child.once('exit', resolve));
  console.log('-- echo_server --verbose stderr:\n' + stderr);
}

const what = process.argv[2];
(async () => {
  if (what === 'client') {
    await probeClient('v1');
    await probeClient('v2');
  } else if (what === 'server') {
    await probeServer();
  } else {
    console.error('usage: probe.js client|server');
    process.exit(2);
  }
  process.exit(0);
})().catch(err => { console.error(err); process.exit(1); });
