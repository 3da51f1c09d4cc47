// API keys and TLS: the client and the example against a server started with Auth:ApiKeys and an https:// endpoint
// (a self-signed certificate made in a temporary folder, see server.ts), next to a plain server for the same images.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { VqDiffusionClient, VqDiffusionError, checkApiKey, type GenerateRequestInit } from "../src/index.js";
import { assertSamePixels } from "./pixels.js";
import { runExample } from "./example.js";
import { REPO_ROOT, startServer, type TestServer } from "./server.js";

const GOLDEN = join(REPO_ROOT, "tests/fixtures/tiny-ithq/golden/png/pipeline_single_cfg_0.png");
const API_KEY = "test-key-0123456789abcdef";
const WRONG_KEY = "not-the-key-0123456789";
const NO_CREDENTIALS = "no credentials: send the metadata 'authorization: Bearer <API key or token>'";
const NOT_VALID = "the API key is not valid";
/** The golden request (diffusers' pipeline_single_cfg_0.png). */
const REQUEST: GenerateRequestInit = { prompts: ["a photo of a cat"], numInferenceSteps: 10, guidanceScale: 5, truncationRate: 1.0, seed: 0n };
const EXAMPLE_REQUEST = ["--prompt", "a photo of a cat", "--steps", "10", "--guidance-scale", "5", "--truncation-rate", "1.0", "--seed", "0", "--quiet"];

let plain: TestServer;
let secure: TestServer;
let plainImage: Buffer;
let dir: string;

before(async () => {
  [plain, secure] = await Promise.all([
    startServer(),
    startServer(120_000, undefined, { https: true, extraArgs: [`--Auth:ApiKeys:tests=${API_KEY}`], apiKey: API_KEY }),
  ]);
  plainImage = Buffer.from((await plain.client.generateImages(REQUEST))[0]!.data);
  dir = mkdtempSync(join(tmpdir(), "vqd-auth-"));
  writeFileSync(join(dir, "text.txt"), "not a certificate");
  writeFileSync(join(dir, "cert.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
});

after(async () => {
  await Promise.all([plain?.stop(), secure?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function unauthenticated(details: string) {
  return (err: unknown) => {
    assert.ok(err instanceof VqDiffusionError, String(err));
    assert.equal(err.code, grpc.status.UNAUTHENTICATED);
    assert.equal(err.codeName, "UNAUTHENTICATED");
    assert.equal(err.details, details);
    assert.ok(!err.message.includes("not-the-key"), err.message);
    return true;
  };
}

const deadline = () => Date.now() + 30_000;

test("with the key and the CA over TLS: getModelInfo, and the plain server's image bytes", async () => {
  const client = new VqDiffusionClient(secure.httpsAddress!, { apiKey: API_KEY, rootCerts: secure.caPem });
  try {
    assert.equal((await client.getModelInfo()).modelId, "tiny-ithq");
    const images = await client.generateImages(REQUEST);
    assert.equal(images.length, 1);
    assert.deepEqual(Buffer.from(images[0]!.data), plainImage);
    assertSamePixels(images[0]!.data, GOLDEN);
  } finally {
    client.close();
  }
});

test("the key works over plaintext too, next to the caller's own metadata", async () => {
  const client = new VqDiffusionClient(secure.address, { apiKey: API_KEY });
  try {
    const metadata = new grpc.Metadata();
    metadata.set("x-test", "1");
    assert.equal((await client.getModelInfo({ metadata })).modelId, "tiny-ithq");
    assert.deepEqual(metadata.get("authorization"), []); // the caller's metadata is not changed
    assert.deepEqual(Buffer.from((await client.generateImages(REQUEST, { metadata }))[0]!.data), plainImage);
  } finally {
    client.close();
  }
});

for (const tls of [true, false]) {
  test(`without a key (${tls ? "TLS" : "plaintext"}): UNAUTHENTICATED, no credentials`, async () => {
    const client = tls ? new VqDiffusionClient(secure.httpsAddress!, { rootCerts: secure.caPem }) : new VqDiffusionClient(secure.address);
    try {
      await assert.rejects(client.getModelInfo({ deadline: deadline() }), unauthenticated(NO_CREDENTIALS));
      await assert.rejects(client.generateImages({ prompts: ["a cat"], numInferenceSteps: 1 }, { deadline: deadline() }), unauthenticated(NO_CREDENTIALS));
    } finally {
      client.close();
    }
  });
}

test("a wrong key: UNAUTHENTICATED, the API key is not valid", async () => {
  const client = new VqDiffusionClient(secure.httpsAddress!, { apiKey: WRONG_KEY, rootCerts: secure.caPem });
  try {
    await assert.rejects(client.getModelInfo({ deadline: deadline() }), unauthenticated(NOT_VALID));
    await assert.rejects(client.generateImages({ prompts: ["a cat"], numInferenceSteps: 1 }, { deadline: deadline() }), unauthenticated(NOT_VALID));
  } finally {
    client.close();
  }
});

test("without the CA the TLS handshake fails: UNAVAILABLE", async () => {
  const client = new VqDiffusionClient(secure.httpsAddress!, { apiKey: API_KEY });
  try {
    await assert.rejects(client.getModelInfo({ deadline: deadline() }), (err: unknown) => {
      assert.ok(err instanceof VqDiffusionError, String(err));
      assert.equal(err.codeName, "UNAVAILABLE");
      return true;
    });
  } finally {
    client.close();
  }
});

test("health stays open without a key", async () => {
  // grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""): status SERVING = field 1, value 1.
  const raw = new grpc.Client(secure.httpsAddress!.slice("https://".length), grpc.credentials.createSsl(secure.caPem));
  try {
    const reply = await new Promise<Buffer>((resolveCall, reject) =>
      raw.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline: deadline() },
        (err, value) => (err ? reject(err) : resolveCall(value!)),
      ),
    );
    assert.deepEqual([...reply], [0x08, 0x01]);
  } finally {
    raw.close();
  }
});

test("the client rejects a malformed key, and rootCerts without https://", () => {
  assert.throws(() => new VqDiffusionClient("http://127.0.0.1:1", { apiKey: "" }), { name: "TypeError", message: "apiKey must not be empty" });
  for (const key of ["two words-0123456789", "tab\t0123456789abcdef", "clé-0123456789abcdef", "del\x7f0123456789abcdef"]) {
    assert.throws(() => new VqDiffusionClient("http://127.0.0.1:1", { apiKey: key }), {
      name: "TypeError",
      message: "apiKey must be printable ASCII without spaces",
    });
  }
  assert.equal(checkApiKey(API_KEY), API_KEY);
  assert.throws(() => new VqDiffusionClient("http://127.0.0.1:1", { rootCerts: Buffer.from("-----BEGIN CERTIFICATE-----") }), {
    name: "TypeError",
    message: "rootCerts need an https:// address",
  });
});

function errorLine(r: { stderr: string }): string {
  const lines = r.stderr.replace(/\n$/, "").split("\n");
  assert.equal(lines.length, 1, r.stderr);
  return lines[0]!;
}

function outDir(): string {
  const out = mkdtempSync(join(dir, "out-"));
  rmSync(out, { recursive: true });
  return out;
}

test("the example with --api-key and --ca-cert writes the plain server's PNG", async () => {
  const out = outDir();
  const r = await runExample(["--server", secure.httpsAddress!, "--api-key", API_KEY, "--ca-cert", secure.caCert!, ...EXAMPLE_REQUEST, "--output", out]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  assert.deepEqual(readdirSync(out), ["000.png"]);
  assert.deepEqual(readFileSync(join(out, "000.png")), plainImage);
});

test("the example takes the key and the CA from VQD_API_KEY and VQD_CA_CERT; the flag wins", async () => {
  const env = { VQD_API_KEY: API_KEY, VQD_CA_CERT: secure.caCert! };
  const out = outDir();
  const r = await runExample(["--server", secure.httpsAddress!, ...EXAMPLE_REQUEST, "--output", out], env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readFileSync(join(out, "000.png")), plainImage);

  const wrong = await runExample(["--server", secure.httpsAddress!, "--api-key", WRONG_KEY, ...EXAMPLE_REQUEST, "--output", outDir()], env);
  assert.equal(wrong.code, 1);
  assert.equal(errorLine(wrong), `error: server ${secure.httpsAddress}: Unauthenticated: ${NOT_VALID}`);
});

test("the example without a key (or an empty VQD_API_KEY) exits 1 with Unauthenticated", async () => {
  const envs: Record<string, string>[] = [{ VQD_CA_CERT: secure.caCert! }, { VQD_CA_CERT: secure.caCert!, VQD_API_KEY: "" }];
  for (const env of envs) {
    const out = outDir();
    const r = await runExample(["--server", secure.httpsAddress!, ...EXAMPLE_REQUEST, "--output", out], env);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(errorLine(r), `error: server ${secure.httpsAddress}: Unauthenticated: ${NO_CREDENTIALS}`);
    assert.ok(!existsSync(out));
  }
});

test("the example with a wrong key exits 1 without echoing it; without the CA, Unavailable", async () => {
  const wrong = await runExample(["--server", secure.httpsAddress!, "--api-key", WRONG_KEY, "--ca-cert", secure.caCert!, ...EXAMPLE_REQUEST, "--output", outDir()]);
  assert.equal(wrong.code, 1);
  assert.equal(errorLine(wrong), `error: server ${secure.httpsAddress}: Unauthenticated: ${NOT_VALID}`);

  const noCa = await runExample(["--server", secure.httpsAddress!, "--api-key", API_KEY, ...EXAMPLE_REQUEST, "--output", outDir()]);
  assert.equal(noCa.code, 1);
  assert.ok(errorLine(noCa).startsWith(`error: server ${secure.httpsAddress}: Unavailable`), noCa.stderr);
});

const FLAG_ERRORS: [string[], Record<string, string>, string][] = [
  [["--api-key="], {}, "error: --api-key must not be empty."],
  [["--api-key", ""], {}, "error: --api-key must not be empty."],
  [["--api-key", "two words-0123456789"], {}, "error: --api-key must be printable ASCII without spaces."],
  [["--api-key", "tab\t0123456789abcdef"], {}, "error: --api-key must be printable ASCII without spaces."],
  [["--api-key", "clé-0123456789abcdef"], {}, "error: --api-key must be printable ASCII without spaces."],
  [[], { VQD_API_KEY: "two words-0123456789" }, "error: VQD_API_KEY must be printable ASCII without spaces."],
  [["--api-key"], {}, "error: --api-key needs a value."],
  [["--ca-cert"], {}, "error: --ca-cert needs a value."],
  [["--ca-cert", "{dir}/cert.pem"], {}, "error: --ca-cert needs an https:// --server."],
  [[], { VQD_CA_CERT: "{dir}/cert.pem" }, "error: VQD_CA_CERT needs an https:// --server."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/missing.pem"], {}, "error: --ca-cert {dir}/missing.pem: Could not find file '{dir}/missing.pem'."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "missing.pem"], {}, "error: --ca-cert missing.pem: Could not find file '{dir}/missing.pem'."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/nowhere/cert.pem"], {}, "error: --ca-cert {dir}/nowhere/cert.pem: Could not find a part of the path '{dir}/nowhere/cert.pem'."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}"], {}, "error: --ca-cert {dir}: Access to the path '{dir}' is denied."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/text.txt"], {}, "error: --ca-cert {dir}/text.txt: no PEM certificate (-----BEGIN CERTIFICATE-----)."],
  [["--server", "https://127.0.0.1:1"], { VQD_CA_CERT: "{dir}/text.txt" }, "error: VQD_CA_CERT {dir}/text.txt: no PEM certificate (-----BEGIN CERTIFICATE-----)."],
  [["--server", "https://127.0.0.1:1", "--ca-cert", "{dir}/cert.pem"], {}, "error: --ca-cert {dir}/cert.pem: not a valid PEM certificate."],
  // The API key of the environment is checked before the CA.
  [["--ca-cert", "{dir}/cert.pem"], { VQD_API_KEY: "two words-0123456789" }, "error: VQD_API_KEY must be printable ASCII without spaces."],
  // The --server URL is checked first.
  [["--server", "127.0.0.1:1", "--ca-cert", "{dir}/cert.pem"], {}, "error: --server must be an http:// or https:// URL (http://host:port), got '127.0.0.1:1'."],
];

test("the example's --api-key and --ca-cert errors exit 2 with vqd's line, before any call", async () => {
  // No server is needed: port 1 on loopback would refuse the connection.
  const expand = (s: string) => s.replaceAll("{dir}", dir);
  for (const [flags, env, line] of FLAG_ERRORS) {
    const out = join(dir, "never");
    const args = ["--server", "http://127.0.0.1:1", "--prompt", "a cat", "--output", out, ...flags.map(expand)];
    const r = await runExample(args, Object.fromEntries(Object.entries(env).map(([k, v]) => [k, expand(v)])), dir);
    assert.equal(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
    assert.equal(errorLine(r), expand(line));
    assert.ok(!existsSync(out));
  }
});

test("the example's --api-key and --ca-cert need --server", async () => {
  for (const flag of ["--api-key", "--ca-cert"]) {
    const r = await runExample(["--prompt", "a cat", flag, "x".repeat(20), "--api-key", API_KEY, "--output", join(dir, "never")]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(errorLine(r), `error: ${flag} needs --server (it is for reaching a running server).`);
  }
});

test("the example's usage lists --api-key KEY and --ca-cert FILE after --quality Q", async () => {
  const r = await runExample(["--help"]);
  assert.equal(r.code, 0);
  assert.ok(r.stdout.includes("[--quality Q] [--api-key KEY] [--ca-cert FILE]"), r.stdout);
});
