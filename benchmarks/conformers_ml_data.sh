#!/usr/bin/env bash
# GFN2-xTB training data for an ML card that relaxes ETKDG conformers of FreeSolv molecules
# (issue 15, "ETKDG + relax with an ML card"). Package commands only; train and val molecules
# of the committed reference split (seed 123) -- never the test molecules.
#
#   bash benchmarks/conformers_ml_data.sh relax [1|2]  # ETKDG embeddings + frames along their xTB relaxations
#   bash benchmarks/conformers_ml_data.sh md      # short GFN2-xTB MD (600 K start, ~300 K mean) from the
#                                                 # reference minimum of every MD_STRIDE-th (3) molecule
#   bash benchmarks/conformers_ml_data.sh refs    # the reference conformers, labelled (forces)
#   bash benchmarks/conformers_ml_data.sh join    # -> OUT/train.extxyz, OUT/val.extxyz (relaxation
#                                                 # frames thinned: start, every 12th step, end)
#
# Every stage resumes (molecules already written are skipped). OUT defaults to out/conformers_ml.
set -euo pipefail
STAGE=${1:?stage: relax, md, refs or join}
OUT=${OUT:-out/conformers_ml}
REF=${REF:-benchmarks/conformer_data/ref_freesolv}
CLI=${CLI:-.venv/bin/ase-mlmd}
MD_STRIDE=${MD_STRIDE:-3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
for split in train val; do  # 'SMILES id' of the split (csv module: SMILES may hold commas)
  .venv/bin/python -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    if r["split"] == sys.argv[2]:
        print(r["smiles"], r["id"])' "$REF/molecules.csv" "$split" > "$OUT/$split.smi"
done
case "$STAGE" in
relax)  # optional PART: 1 = first half of the train molecules, then val; 2 = second half
  PART=${2:-all}  # (two processes side by side on a loaded machine; "all": one after the other)
  n=$(wc -l < "$OUT/train.smi"); half=$(( (n + 1) / 2 ))
  case "$PART" in
    1) head -n "$half" "$OUT/train.smi" > "$OUT/train_1.smi"; jobs="train_1:train val:val" ;;
    2) tail -n +"$((half + 1))" "$OUT/train.smi" > "$OUT/train_2.smi"; jobs="train_2:train" ;;
    *) jobs="train:train val:val" ;;
  esac
  for job in $jobs; do
    list=${job%%:*}; split=${job##*:}
    $CLI conformers "$OUT/$list.smi" --method etkdg+relax --calc gfn2-xtb -n 4 --seed 0 \
      --relax-frames "$OUT/relax_$split" --relax-every 6 -o "$OUT/relaxed_$list/"
  done ;;
md)
  for split in train val; do
    mkdir -p "$OUT/md_$split"
    n=0
    for f in "$REF/$split"/*.extxyz; do
      n=$((n + 1)); [ $(( (n - 1) % MD_STRIDE )) -eq 0 ] || continue  # every MD_STRIDE-th molecule
      id=$(basename "$f" .extxyz)
      [ -s "$OUT/md_$split/$id.done" ] && continue
      $CLI sample "$f" --index 0 --reference gfn2-xtb --temperature 600 --timestep 0.5 \
        --steps 120 --every 12 --seed 0 --no-progress -o "$OUT/md_$split/$id.extxyz"
      echo ok > "$OUT/md_$split/$id.done"
    done
  done ;;
refs)
  for split in train val; do
    cat "$REF/$split"/*.extxyz > "$OUT/refs_$split.extxyz"
    $CLI label "$OUT/refs_$split.extxyz" --reference gfn2-xtb --no-progress -o "$OUT/refs_${split}_labelled.extxyz"
  done ;;
join)  # relaxation frames thinned to the start, every KEEP_EVERY-th step (12) and the end
  shopt -s nullglob  # a stage stopped early (md) leaves some folders empty
  for split in ${2:-train val}; do
    .venv/bin/python - "$OUT/relax_$split" "${KEEP_EVERY:-12}" "$OUT/relax_$split.extxyz" <<'PY'
import sys
from pathlib import Path
from ase.io import read, write
folder, every, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
frames = [f for p in sorted(folder.glob("*.extxyz")) for f in read(p, ":")
          if f.info["relax_step"] % every == 0 or f.info["relax_last"]]
write(out, frames, format="extxyz")
PY
    cat "$OUT/relax_$split.extxyz" "$OUT/md_$split"/*.extxyz "$OUT/refs_${split}_labelled.extxyz" > "$OUT/$split.extxyz"
    echo "$split: $(grep -c '^Properties' "$OUT/$split.extxyz") frames"
  done ;;
*) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
