// Supabase Edge Function: text in, speech out, through the Orpheus frontend on Cloud Run.
//
// The API key never reaches the browser: it lives in this function's secrets.
//
//   supabase secrets set ORPHEUS_URL=https://orpheus-frontend-xxxx.a.run.app \
//                        ORPHEUS_API_KEY=<the key `orpheus setup` printed>
//   (`orpheus status` shows the URL; the key is the latest version of the orpheus-api-key secret)
//   supabase functions deploy orpheus-tts
//
// Call it (the Supabase client adds the user's JWT; keep "Verify JWT" on so that only your
// signed-in users can spend GPU time):
//
//   const { data } = await supabase.functions.invoke("orpheus-tts",
//     { body: { text: "Hello <laugh> there", voice: "tara" } });
//
// The audio is streamed through as it is generated, so playback can start before the end.
//
// Try it against `orpheus local up` without Supabase (it imports nothing, so it runs offline):
//
//   ORPHEUS_URL=http://127.0.0.1:5005 ORPHEUS_API_KEY=<the key it printed> \
//   DENO_SERVE_ADDRESS=tcp:127.0.0.1:8000 \
//     deno run --allow-net=127.0.0.1 --allow-env=ORPHEUS_URL,ORPHEUS_API_KEY index.ts
//   curl -sS 127.0.0.1:8000 -d '{"text": "Hello <laugh>"}' -o hello.wav
//
// (tests/examples/test_supabase_function.py does the same in CI, and `deno check`s it.)

const ORPHEUS_URL = Deno.env.get("ORPHEUS_URL");
const ORPHEUS_API_KEY = Deno.env.get("ORPHEUS_API_KEY");

const VOICES = new Set(["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]);
const FORMATS: Record<string, string> = {
  wav: "audio/wav",
  mp3: "audio/mpeg",
  opus: "audio/ogg",
  flac: "audio/flac",
  aac: "audio/aac",
  pcm: "audio/L16;rate=24000;channels=1",
};
// A GPU cold start (model load) can take minutes; the frontend's own timeout is the real bound.
const TIMEOUT_MS = 300_000;
const MAX_CHARS = 4000;

const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "POST, OPTIONS",
};

function error(status: number, message: string): Response {
  return new Response(JSON.stringify({ error: { message } }), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
}

interface SpeechRequest {
  text?: unknown;
  voice?: unknown;
  format?: unknown;
}

Deno.serve(async (req: Request): Promise<Response> => {
  if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });
  if (req.method !== "POST") return error(405, "use POST");
  if (!ORPHEUS_URL || !ORPHEUS_API_KEY) {
    return error(500, "ORPHEUS_URL and ORPHEUS_API_KEY must be set with `supabase secrets set`");
  }

  let body: SpeechRequest;
  try {
    body = await req.json();
  } catch {
    return error(400, "body must be JSON: {\"text\": \"...\", \"voice\": \"tara\"}");
  }
  const text = typeof body.text === "string" ? body.text.trim() : "";
  const voice = typeof body.voice === "string" ? body.voice : "tara";
  const format = typeof body.format === "string" ? body.format : "wav";
  if (!text) return error(400, "text is required");
  if (text.length > MAX_CHARS) return error(413, `text is longer than ${MAX_CHARS} characters`);
  if (!VOICES.has(voice)) return error(400, `unknown voice ${voice}`);
  if (!(format in FORMATS)) return error(400, `unknown format ${format}`);

  let upstream: Response;
  try {
    upstream = await fetch(`${ORPHEUS_URL.replace(/\/$/, "")}/v1/audio/speech`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-API-Key": ORPHEUS_API_KEY },
      body: JSON.stringify({
        model: "orpheus",
        input: text,
        voice,
        response_format: format,
        stream: true,
      }),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (e) {
    return error(504, `speech service unreachable: ${e instanceof Error ? e.message : e}`);
  }

  if (!upstream.ok || !upstream.body) {
    // The frontend answers errors in OpenAI's shape; pass the message on, never the key.
    let message = `speech service answered ${upstream.status}`;
    try {
      const detail = await upstream.json();
      if (detail?.error?.message) message = detail.error.message;
    } catch { /* not JSON */ }
    return error(upstream.status === 401 ? 502 : upstream.status, message);
  }

  return new Response(upstream.body, {
    status: 200,
    headers: { ...corsHeaders, "Content-Type": FORMATS[format], "Cache-Control": "no-store" },
  });
});
