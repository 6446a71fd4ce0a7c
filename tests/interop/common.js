'use strict';
// Shared bits of the interop scripts: flag parsing, echo.proto loading, a quiet logger.

const path = require('path');
const antpb = require('antpb');

const DEFAULT_PROTO = path.join(__dirname, '..', '..', 'examples', 'echo-server', 'echo.proto');

// parseFlags(['--port', '0'], { port: '12200' }) -> { port: '0' }
function parseFlags(argv, defaults) {
  const flags = Object.assign({}, defaults);
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !(m[1] in defaults)) throw new Error('unknown argument: ' + argv[i]);
    if (typeof defaults[m[1]] === 'boolean') {
      flags[m[1]] = true;
    } else if (m[2] !== undefined) {
      flags[m[1]] = m[2];
    } else if (i + 1 < argv.length) {
      flags[m[1]] = argv[++i];
    } else {
      throw new Error('missing value for --' + m[1]);
    }
  }
  return flags;
}

// antpb is the protobufjs 6.8 fork that sofa-rpc-node's README uses; loadAll() takes a
// folder, this takes one file.
function loadProto(file) {
  const root = new antpb.protobuf.Root();
  root.loadSync([ path.resolve(file) ]);
  return root;
}

// sofa-rpc-node requires a logger; keep it silent unless asked (benchmarks).
function makeLogger(verbose) {
  const noop = () => {};
  const err = (...args) => console.error(...args);
  return {
    debug: verbose ? err : noop,
    info: verbose ? err : noop,
    warn: err,
    error: verbose ? err : noop,
  };
}

module.exports = { DEFAULT_PROTO, parseFlags, loadProto, makeLogger };
