/** (a) bare node:http doing the module's work by hand: the practical ceiling. */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { ConnectRequest } from 'nestjs-web-pubsub';
import { listening, readBody, type RunningServer } from './servers.js';
import {
  JSON_TYPE,
  TEXT_TYPE,
  connectReply,
  dtoReply,
  isChatMessage,
  requestedWork,
  upstreamRefusal,
} from './workloads.js';

async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const refusal = req.method === 'POST' ? upstreamRefusal(req.headers) : 405;
  if (refusal) {
    req.resume();
    res.writeHead(refusal).end();
    return;
  }
  const body = await readBody(req);
  const work = requestedWork(req.headers);
  if (work === 'echo') {
    res.writeHead(200, { 'content-type': TEXT_TYPE }).end(body.toString('utf8'));
    return;
  }
  let payload: unknown;
  try {
    payload = JSON.parse(body.toString('utf8'));
  } catch {
    res.writeHead(400).end();
    return;
  }
  if (work === 'validated' && !isChatMessage(payload)) {
    res.writeHead(400).end();
    return;
  }
  const reply =
    work === 'validated'
      ? dtoReply(payload as { sequence: number })
      : connectReply((payload as ConnectRequest).query);
  res.writeHead(200, { 'content-type': JSON_TYPE }).end(JSON.stringify(reply));
}

export function startNodeHttp(): Promise<RunningServer> {
  return listening(createServer((req, res) => void answer(req, res)));
}
