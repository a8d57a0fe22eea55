// The import rules of src/ (run by `npm test` through `npm run deps`). Two rules:
//  - no import cycle among files;
//  - folders form a one-way graph: a folder imports only folders below it in LAYERS.
// docs/architecture.md explains the layers; keep the two in step.
const LAYERS = [
  'nginx-language', // nginx's little language: variables, units, addresses, header tokens
  'net',            // sockets: listen, client address, local-resource and failure kinds
  'limits',         // limit_req / limit_conn zones and decisions: pure, imports no folder
  'config',         // config model types; schema, load, cross-checks
  'tls',            // certificates checked and loaded, secure contexts per listen address, ticket keys
  'balancer',       // peer state and one file per policy
  'observability',  // log, metrics, access log, status page
  'health',         // active probes
  'sessions',       // session ids, affinity, stores
  'proxy',          // upstream/ (transport), http/ (client side), stream/ (L4)
  'admin',          // admin HTTP API over a narrow interface
  'process',        // process lifecycle: signals, pid file, watch, heap tuning
  'runtime',        // roles: single process, cluster primary, worker
  'tools',          // import-nginx, firewall, demo, offline commands
];
// Inside proxy/: the upstream client knows neither side that uses it.
const PROXY_WINGS = ['upstream', 'stream', 'http'];

const folder = (name) => `^src/${name}/`;
const layerRules = LAYERS.flatMap((name, i) => {
  const above = LAYERS.slice(i + 1);
  if (above.length === 0) return [];
  return [{
    name: `layer-${name}`,
    comment: `${name}/ may import only folders below it: ${LAYERS.slice(0, i).join(', ') || '(none)'}`,
    severity: 'error',
    from: { path: folder(name) },
    to: { path: `^src/(${above.join('|')})/|^src/cli\\.ts$` },
  }];
});
const wingRules = [
  { name: 'proxy-upstream-alone', severity: 'error', from: { path: '^src/proxy/upstream/' }, to: { path: '^src/proxy/(http|stream)/' } },
  { name: 'proxy-stream-not-http', severity: 'error', from: { path: '^src/proxy/stream/' }, to: { path: '^src/proxy/http/' } },
  { name: 'proxy-http-not-stream', severity: 'error', from: { path: '^src/proxy/http/' }, to: { path: '^src/proxy/stream/' } },
];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import cycle among files (type-only imports count: they tie the designs together too).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-unlayered-folder',
      comment: `Every folder of src/ has a place in LAYERS (.dependency-cruiser.cjs): ${LAYERS.join(', ')}`,
      severity: 'error',
      from: { path: '^src/[^/]+/', pathNot: `^src/(${LAYERS.join('|')})/` },
      to: {},
    },
    ...layerRules,
    ...wingRules,
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
  },
};
