"""Task heads for multitask BERT: small nn.Modules that turn BertModel outputs into predictions.

pooling (cls_pool, mean_pool) -> sentiment (SST-5) ; paraphrase (bi-encoder pair classifier,
pair_features) ; similarity (cosine score, regressor) ; cross_encoder ; sentence_encoder ;
multitask (MultitaskBert: one shared encoder + the three heads).
"""
from .cross_encoder import CrossEncoderHead
from .multitask_bert import MultitaskBert
from .paraphrase import ParaphraseHead, pair_features
from .pooling import cls_pool, mean_pool
from .sentence_encoder import SentenceEncoder
from .sentiment import SentimentHead
from .similarity import CosineScore, SimilarityRegressor, cosine_score

__all__ = ["cls_pool", "mean_pool", "SentimentHead", "ParaphraseHead", "pair_features", "cosine_score",
           "CosineScore", "SimilarityRegressor", "CrossEncoderHead", "SentenceEncoder", "MultitaskBert"]
