#!/usr/bin/env node
'use strict';
// Bolt frame splitter/decoder for captures, written from the frame layouts in
// sofa-bolt-node/lib/protocol/v1.js and v2.js (no sofa code used, so it also checks them).
//
//   node bolt_dump.js FILE...                 decode frames stored in files
//   node bolt_dump.js --proxy LISTEN_PORT TARGET_HOST:PORT [--save DIR]
//        TCP proxy on 127.0.0.1 that prints every frame in both directions and, with
//        --save, writes each one to DIR/<n>-<c2s|s2c>-<v1|v2>-<kind>-id<id>.bin

const fs = require('fs');
const net = require('net');
const path = require('path');
const { crc32 } = require('zlib'); // CRC-32 (ISO-HDLC), as the crc package's crc32 used by sofa-bolt-node

// Length of the first frame in buf, 0 if incomplete. Throws on an unknown protocol byte.
function frameLength(buf) {
  if (buf.length < 1) return 0;
  const v2 = buf[0] === 0x02;
  if (buf[0] !== 0x01 && !v2) throw new Error('not a Bolt frame, first byte 0x' + buf[0].toString(16));
  const o = v2 ? 1 : 0; // v2 has ver1 after the proto byte
  const isResponse = buf[1 + o] === 0x00;
  const fixed = (isResponse ? 20 : 22) + (v2 ? 2 : 0); // v2 adds ver1 and switch
  if (buf.length < fixed) return 0;
  const lens = fixed - 8;
  let len = fixed + buf.readUInt16BE(lens) + buf.readUInt16BE(lens + 2) + buf.readUInt32BE(lens + 4);
  if (v2 && buf[11] === 0x01) len += 4; // CRC32
  return buf.length < len ? 0 : len;
}

const STATUS = {
  0: 'SUCCESS', 1: 'ERROR', 2: 'SERVER_EXCEPTION', 3: 'UNKNOWN', 4: 'SERVER_THREADPOOL_BUSY',
  5: 'ERROR_COMM', 6: 'NO_PROCESSOR', 7: 'TIMEOUT', 8: 'CLIENT_SEND_ERROR', 9: 'CODEC_EXCEPTION',
  0x10: 'CONNECTION_CLOSED',
};

function decodeHeaderMap(buf) {
  const map = [];
  let off = 0;
  while (off < buf.length) {
    const kl = buf.readInt32BE(off); off += 4;
    const k = buf.toString('utf8', off, off + kl); off += kl;
    const vl = buf.readInt32BE(off); off += 4;
    const v = vl > 0 ? buf.toString('utf8', off, off + vl) : (vl === 0 ? '' : null);
    if (vl > 0) off += vl;
    map.push([ k, v ]);
  }
  return map;
}

// Returns a plain object describing one whole frame.
function decodeFrame(buf) {
  const v2 = buf[0] === 0x02;
  let off = 1;
  const f = { proto: buf[0] };
  if (v2) f.ver1 = buf[off++];
  f.type = buf[off++];
  f.cmdcode = buf.readUInt16BE(off); off += 2;
  f.ver2 = buf[off++];
  f.requestId = buf.readUInt32BE(off); off += 4;
  f.codec = buf[off++];
  if (v2) f.switch = buf[off++];
  if (f.type === 0x00) {
    f.status = buf.readUInt16BE(off); off += 2;
    f.statusName = STATUS[f.status] || '?';
  } else {
    f.timeout = buf.readUInt32BE(off); off += 4;
  }
  const classLen = buf.readUInt16BE(off); off += 2;
  const headerLen = buf.readUInt16BE(off); off += 2;
  const contentLen = buf.readUInt32BE(off); off += 4;
  f.className = buf.toString('utf8', off, off + classLen); off += classLen;
  f.header = decodeHeaderMap(buf.slice(off, off + headerLen)); off += headerLen;
  f.content = buf.slice(off, off + contentLen); off += contentLen;
  if (v2 && f.switch === 0x01) {
    f.crc32 = buf.readUInt32BE(off);
    f.crcOk = crc32(buf.slice(0, off)) === f.crc32;
  }
  f.kind = f.cmdcode === 0 ? (f.type === 0 ? 'heartbeat-ack' : 'heartbeat') :
    (f.type === 0 ? 'response' : (f.type === 2 ? 'oneway' : 'request'));
  return f;
}

function describe(buf) {
  const f = decodeFrame(buf);
  const lines = [];
  lines.push(`${f.kind} ${buf[0] === 2 ? 'v2' : 'v1'} id=${f.requestId} type=0x${f.type.toString(16)}` +
    ` cmdcode=${f.cmdcode} ver2=${f.ver2} codec=${f.codec}` +
    (f.ver1 !== undefined ? ` ver1=${f.ver1} switch=0x${f.switch.toString(16)}` : '') +
    (f.status !== undefined ? ` status=0x${f.status.toString(16).padStart(4, '0')} (${f.statusName})` : ` timeout=${f.timeout}`) +
    ` length=${buf.length}`);
  if (f.className) lines.push('  class   ' + f.className);
  for (const [ k, v ] of f.header) lines.push(`  header  ${k} = ${JSON.stringify(v)}`);
  if (f.content.length) {
    lines.push('  content ' + f.content.toString('hex'));
    if (/^[\x20-\x7e]*$/.test(f.content.toString('latin1'))) lines.push('  text    ' + JSON.stringify(f.content.toString()));
  }
  if (f.crc32 !== undefined) lines.push(`  crc32   0x${f.crc32.toString(16).padStart(8, '0')} ${f.crcOk ? 'ok' : 'MISMATCH'}`);
  lines.push('  hex     ' + buf.toString('hex'));
  return { frame: f, text: lines.join('\n') };
}

// Splits a byte stream into frames; calls onFrame(buf) for each whole frame.
function splitter(onFrame) {
  let pending = Buffer.alloc(0);
  return chunk => {
    pending = Buffer.concat([ pending, chunk ]);
    for (;;) {
      const len = frameLength(pending);
      if (!len) return;
      onFrame(pending.slice(0, len));
      pending = pending.slice(len);
    }
  };
}

function proxy(listenPort, target, saveDir) {
  const [ host, port ] = target.split(':');
  let n = 0;
  const onFrame = dir => buf => {
    const { frame, text } = describe(buf);
    n++;
    console.log(`#${n} ${dir} ${text}\n`);
    if (saveDir) {
      const name = `${String(n).padStart(3, '0')}-${dir}-${buf[0] === 2 ? 'v2' : 'v1'}-${frame.kind}-id${frame.requestId}.bin`;
      fs.writeFileSync(path.join(saveDir, name), buf);
    }
  };
  const server = net.createServer(client => {
    const upstream = net.connect(Number(port), host);
    const c2s = splitter(onFrame('c2s'));
    const s2c = splitter(onFrame('s2c'));
    client.on('data', d => { c2s(d); upstream.write(d); });
    upstream.on('data', d => { s2c(d); client.write(d); });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  server.listen(Number(listenPort), '127.0.0.1', () => {
    process.stdout.write('LISTENING ' + server.address().port + '\n');
  });
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--proxy') {
    const saveIdx = argv.indexOf('--save');
    const saveDir = saveIdx > 0 ? argv[saveIdx + 1] : null;
    if (saveDir) fs.mkdirSync(saveDir, { recursive: true });
    proxy(argv[1], argv[2], saveDir);
  } else if (argv.length) {
    for (const file of argv) {
      const split = splitter(buf => console.log(file + ': ' + describe(buf).text + '\n'));
      split(fs.readFileSync(file));
    }
  } else {
    console.error('usage: bolt_dump.js FILE... | --proxy LISTEN_PORT HOST:PORT [--save DIR]');
    process.exit(2);
  }
}

module.exports = { frameLength, decodeFrame, describe, splitter };
