import { AUDIT_GENESIS_HASH, auditEventHash } from '../registry/audit-hash.js';
import type { AuditRepo } from '../registry/store.js';

export interface AuditVerification {
  ok: boolean;
  events: number;
  /** First broken place: a gap in seq (deleted row), a hash that does not match (edited row) or a broken link. */
  problem?: { seq: number; kind: 'gap' | 'hash-mismatch' | 'broken-link'; detail: string };
}

/** Walks the whole hash chain in seq order and reports the first row that was edited, deleted or re-linked. */
export async function verifyAuditChain(store: AuditRepo, onProgress?: (n: number) => void): Promise<AuditVerification> {
  let prevHash = AUDIT_GENESIS_HASH;
  let expectedSeq: number | undefined;
  let n = 0;
  for await (const batch of store.iterateAudit(1000)) {
    for (const e of batch) {
      if (expectedSeq !== undefined && e.seq !== expectedSeq) {
        return { ok: false, events: n, problem: { seq: expectedSeq, kind: 'gap', detail: `event ${expectedSeq} is missing (next present is ${e.seq})` } };
      }
      if (e.prevHash !== prevHash) return { ok: false, events: n, problem: { seq: e.seq, kind: 'broken-link', detail: `prevHash does not equal the hash of event ${e.seq - 1}` } };
      const { hash, ...rest } = e;
      if (auditEventHash(rest) !== hash) return { ok: false, events: n, problem: { seq: e.seq, kind: 'hash-mismatch', detail: `event ${e.seq} (${e.action}) was modified after it was written` } };
      prevHash = hash;
      expectedSeq = e.seq + 1;
      n++;
    }
    onProgress?.(n);
  }
  return { ok: true, events: n };
}
