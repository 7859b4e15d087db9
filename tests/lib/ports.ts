/**
 * Host port blocks for test stacks. e2e and fault files run three at a time, each in its own process: a block
 * (100 ports from 20000, below Linux's ephemeral range 32768-60999, where a published port can
 * collide with the local end of an outgoing connection) is claimed by creating a marker file
 * exclusively, so two processes never draw the same block; the marker goes when the process ends.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const DIR = path.join(os.tmpdir(), "pg-cluster-test-port-blocks");
const BLOCKS = 120;
const claimed: string[] = [];

process.on("exit", () => {
  for (const f of claimed) fs.rmSync(f, { force: true });
});

/** The first port of a free block of 100 (20000 + 100 n), claimed for this process. */
export function claimPortBlock(): number {
  fs.mkdirSync(DIR, { recursive: true });
  const start = Math.floor(Math.random() * BLOCKS);
  for (let i = 0; i < BLOCKS; i++) {
    const block = (start + i) % BLOCKS;
    const marker = path.join(DIR, String(block));
    try {
      fs.writeFileSync(marker, String(process.pid), { flag: "wx" });
    } catch {
      // Taken: by a live process, or left by one that died (then reclaimed below).
      const owner = Number(fs.readFileSync(marker, "utf8"));
      if (alive(owner)) continue;
      fs.writeFileSync(marker, String(process.pid));
    }
    claimed.push(marker);
    return 20000 + block * 100;
  }
  throw new Error(`no free test port block of 100 in 20000..${20000 + BLOCKS * 100}`);
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
