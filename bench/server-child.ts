/**
 * One server under test, in its own process so that its CPU time and memory can be read apart
 * from the load generator's. Started by run.ts with IPC: it reports its port, answers usage
 * queries and exits on request (which also writes a `--cpu-prof` profile).
 */
import { SERVERS, startServer, type ServerName } from './servers.js';

export type ChildRequest =
  { type: 'usage'; id: number; collectGarbage: boolean } | { type: 'exit' };

export type ChildReport =
  | { type: 'ready'; port: number }
  | {
      type: 'usage';
      id: number;
      cpu: NodeJS.CpuUsage;
      memory: NodeJS.MemoryUsage;
    };

const name = process.argv[2] as ServerName;
if (!SERVERS[name] || !process.send) {
  console.error(`usage: node --expose-gc server-child.js <${Object.keys(SERVERS).join('|')}>`);
  process.exit(2);
}
const report = (message: ChildReport) => process.send!(message);
const collectGarbage = (globalThis as { gc?: () => void }).gc;

const server = await startServer(name);
report({ type: 'ready', port: server.port });

process.on('message', (request: ChildRequest) => {
  if (request.type === 'usage') {
    // Twice: the first pass may leave finalizer-held objects for the second.
    if (request.collectGarbage && collectGarbage) {
      collectGarbage();
      collectGarbage();
    }
    report({
      type: 'usage',
      id: request.id,
      cpu: process.cpuUsage(),
      memory: process.memoryUsage(),
    });
  } else if (request.type === 'exit') {
    void server.close().finally(() => process.exit(0));
  }
});
// The parent is gone (crashed or interrupted): do not linger.
process.on('disconnect', () => process.exit(0));
